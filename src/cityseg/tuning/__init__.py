"""`cityseg tune`: a search over training settings on Optuna, each trial a normal run.

`space` (what varies), `storage` (where the study lives: SQLite, or a server shared by
several machines), `trial` and `reporter` (one trial: train, report each epoch, score),
`study` (the loop that asks for trials until the study is done) and `best` (best.json).
"""
