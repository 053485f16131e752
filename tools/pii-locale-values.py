#!/usr/bin/env python3
"""Writes the values of `phoenix bench pii`'s multi-locale corpus.

Values (names, phone numbers, addresses, companies, e-mails, IBANs) come from Python Faker
(https://pypi.org/project/Faker/, MIT licence), which has each locale's real formats and
name lists; the sentences around them are Phoenix's own (src/bench/pii_eval/locales/).
Two disjoint pools per locale: `tuning`, the one to look at while improving the detector,
and `held_out`, scored by the bench but never to be read or tuned on (a value in both is
dropped from `held_out`).

    python3 -m venv /tmp/fv && /tmp/fv/bin/pip install 'Faker==37.12.0'
    /tmp/fv/bin/python tools/pii-locale-values.py src/bench/pii_eval/locales/values.json.gz

The output is deterministic for one Faker version.
"""
import gzip
import json
import sys

from faker import Faker

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES"]
PER_POOL = 600
SEEDS = {"tuning": 11, "held_out": 977}


def pool(locale, seed):
    fake = Faker(locale)
    fake.seed_instance(seed)
    one_line = lambda s: ", ".join(part.strip() for part in s.splitlines() if part.strip())
    kinds = {
        "person": fake.name,
        "phone": fake.phone_number,
        "address": lambda: one_line(fake.address()),
        "company": fake.company,
        "email": fake.email,
        "iban": fake.iban,
    }
    out = {}
    for kind, make in kinds.items():
        seen = []
        tries = 0
        while len(seen) < PER_POOL and tries < PER_POOL * 20:
            tries += 1
            v = make()
            if v not in seen:
                seen.append(v)
        out[kind] = seen
    return out


def main(path):
    values = {}
    for locale in LOCALES:
        tuning = pool(locale, SEEDS["tuning"])
        held = pool(locale, SEEDS["held_out"])
        for kind in held:
            taken = set(tuning[kind])
            held[kind] = [v for v in held[kind] if v not in taken]
        values[locale] = {"tuning": tuning, "held_out": held}
    data = json.dumps(
        {"faker": __import__("faker").VERSION, "values": values},
        ensure_ascii=False,
        sort_keys=True,
    ).encode()
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
