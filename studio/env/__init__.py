"""The machine the studio runs on: its home folder, the environment a run records, and `studio doctor`.

    home.py          the studio's cache and state folder ($STUDIO_HOME)
    environment.py   versions, device and commit, as env.json records them
    doctor.py        what the studio sees here, one verdict and fix per line
"""
