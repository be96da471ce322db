"""A harmony reply as it streams: the growing text split into reasoning (the analysis channel) and content (the
final channel) deltas, which add up to exactly what `runtime.chat.parse_reply` makes of the whole reply."""

from __future__ import annotations

from gptoss.runtime.chat import parse_reply

# Markup that may still be forming at the end of the text (hand-spelled by ordinary tokens): held back until it is
# complete or clearly not markup, so that text once sent never turns out to be markup.
_MARKERS = ("<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|end|>", "<|return|>", "<|call|>")


class ChannelStream:
    """Feed each increment's text; get back the (reasoning, content) text to send now."""

    def __init__(self) -> None:
        self.text = ""
        self._sent = ("", "")

    def feed(self, text: str, finished: bool) -> tuple[str, str]:
        self.text += text
        visible = self.text if finished else _hold_back(self.text)
        if not finished and "<|message|>" not in visible:
            return "", ""  # no channel yet: until the end, the text may still become a header
        reply = parse_reply(visible)
        now = (reply.analysis, reply.final)
        if not all(new.startswith(old) for new, old in zip(now, self._sent, strict=True)):
            return "", ""  # not an extension of what was sent (cannot happen with whole special tokens)
        deltas = tuple(new[len(old) :] for new, old in zip(now, self._sent, strict=True))
        self._sent = now
        return deltas


def _hold_back(text: str) -> str:
    """`text` without a trailing beginning of a marker."""
    for marker in _MARKERS:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                return text[:-size]
    return text
