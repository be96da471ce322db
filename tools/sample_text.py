"""The text `gptoss-export compare` measures perplexity and expert routing on when no `--text FILE` is given: a short
paragraph of plain English prose with a number and punctuation, written for this project (a quick check; pass a
real corpus with `--text` to judge a model)."""

SAMPLE_TEXT = """\
Every morning the lighthouse keeper climbed ninety-one steps and counted the gulls. When the harbour installed an \
automatic beacon in 1987, he thanked them, walked home, and climbed the steps again the next day.
"""
