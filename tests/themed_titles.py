"""A small catalogue whose titles say what sessions do: space films are watched with space films,
cooking shows with cooking shows. Two more titles are in the titles file only, never watched:
a space film and a cooking show. A model that reads titles should put the new space film
among the space films a space session continues with, and the new cooking show far below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import session, write_shard

SPACE = [
    "Galaxy Raiders",
    "Mars Colony Rescue",
    "Alien Invasion from Orbit",
    "Astronaut Lost in Space",
    "The Last Starship",
    "Moon Base Alpha",
    "Journey to the Andromeda Galaxy",
    "Space Station Disaster",
    "Comet Strike",
    "Interstellar Pilots",
    "Return of the Space Pirates",
    "Planet of the Robots",
]
COOKING = [
    "Baking Bread at Home",
    "Italian Pasta Kitchen",
    "The Great Cake Contest",
    "Soups and Stews for Winter",
    "Grandma's Pie Recipes",
    "Sushi Chef Secrets",
    "Barbecue Grill Masters",
    "French Pastry School",
    "Vegetable Garden Cooking",
    "Spicy Curry Kitchen",
    "Breakfast Pancakes and Waffles",
    "Chocolate Dessert Classics",
]
NEW_SPACE = (900, "Rocket Mission to Jupiter's Moons")
NEW_COOKING = (901, "Homemade Cookies and Muffins")
SPACE_MOVIES = list(range(100, 100 + len(SPACE)))
COOKING_MOVIES = list(range(200, 200 + len(COOKING)))


def titles() -> dict[int, str]:
    named = dict(zip(SPACE_MOVIES, SPACE)) | dict(zip(COOKING_MOVIES, COOKING))
    return named | dict([NEW_SPACE, NEW_COOKING])


def write_themed_dataset(root: Path, users: int = 400, seed: int = 0) -> Path:
    """Each user sticks to one theme and walks its films in catalogue order from a random start."""
    rng = np.random.default_rng(seed)
    records = []
    for user in range(users):
        theme = SPACE_MOVIES if user % 2 else COOKING_MOVIES
        start = int(rng.integers(0, len(theme)))
        length = int(rng.integers(6, 11))
        movies = [theme[(start + step) % len(theme)] for step in range(length)]
        records.append(session(user, movies, [1_000 + 10 * step for step in range(length)]))
    dataset = root / "recommendation" / "dataset"
    write_shard(dataset / "data-0.tfrecord", records[: users // 2])
    write_shard(dataset / "data-1.tfrecord", records[users // 2 :])
    (root / "recommendation" / "movie_title_by_index.json").write_text(json.dumps({str(k): v for k, v in titles().items()}))
    return root
