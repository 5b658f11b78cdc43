"""Edit distance (Levenshtein): the fewest single-character insertions, deletions and
substitutions that turn one string into another. The function this study makes fast.

`python editdist.py` checks the public examples; the real evaluation (evaluate.py) runs
`distance` on hidden inputs and checks every answer against its own reference.
"""


def distance(a: str, b: str) -> int:
    rows, cols = len(a) + 1, len(b) + 1
    table = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        table[i][0] = i
    for j in range(cols):
        table[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            table[i][j] = min(
                table[i - 1][j] + 1,  # delete a[i - 1]
                table[i][j - 1] + 1,  # insert b[j - 1]
                table[i - 1][j - 1] + cost,  # keep or substitute
            )
    return table[-1][-1]


if __name__ == "__main__":
    examples = [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("", "abc", 3),
        ("same", "same", 0),
        ("ümlaut", "umlaut", 1),
    ]
    for a, b, want in examples:
        got = distance(a, b)
        assert got == want, f"distance({a!r}, {b!r}) = {got}, expected {want}"
    print(f"public_examples: {len(examples)}")
