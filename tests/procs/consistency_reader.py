"""Read a config in a tight loop and check every snapshot; print a JSON summary.

Each published config carries ``check``: the SHA-256 of its ``seq`` and
``blob``. A torn or mixed copy fails that check; a generation that goes
backwards fails the order check. Stops when it reads ``final`` (or after
``--seconds``), then prints one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

import shmconf
from tests.checked import expected_check


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle-adoption", action="store_true",
                        help="adopt on a thread too (needed to be a rollout's canary)")
    args = parser.parse_args()
    reader = shmconf.attach(args.name, timeout=10.0, idle_adoption=args.idle_adoption)
    print("attached", flush=True)
    checked = 0
    errors: list[str] = []
    last_generation = 0
    generations = set()
    final_size = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        cfg = reader.get()
        generation = reader.generation
        checked += 1
        if generation < last_generation:
            errors.append(f"generation went back {last_generation} -> {generation}")
        if generation != last_generation:
            generations.add(generation)
            if cfg["check"] != expected_check(cfg["seq"], cfg["blob"]):
                errors.append(f"torn snapshot at generation {generation}")
        last_generation = generation
        if cfg.get("final"):
            final_size = len(cfg["blob"])
            break
        if len(errors) > 10:
            break
    reader.close()
    sys.stdout.write(orjson.dumps({
        "checked": checked,
        "generations": len(generations),
        "last": last_generation,
        "final_size": final_size,
        "errors": errors,
        "held": sorted(generations),
    }).decode() + "\n")


if __name__ == "__main__":
    main()
