"""The text `gptoss-export compare` measures perplexity and expert routing on when no `--text FILE` is given: plain
English prose with numbers and punctuation, written for this project."""

SAMPLE_TEXT = """\
Every morning the lighthouse keeper climbed ninety-one steps, counted the gulls on the railing and wrote the number \
in a ledger nobody had asked him to keep. When the harbour office installed an automatic beacon in 1987, they told \
him the counting could stop. He thanked them, walked home along the sea wall, and the next morning climbed the \
steps anyway.
"""
