"""CSV files for ``loyalty import``: a members file and a purchases file of any size, the same
for the same seed, in the layout of docs/importing.md.

    python -m bench.make_import_csv --members 100000 --purchases 1000000 --out /tmp/import

Members are ``C00000001``...; purchases name them at random (a few unknown ones among them),
at 50 stores, over the last three years. A small share of rows is wrong on purpose (a bad
e-mail, a repeated phone, an unknown member, a negative total, a date without its offset),
so the report of rejected rows has something in it; ``--bad-share 0`` makes none.
Contacts are written the way people type them (full-width letters, hyphens, upper case) so
the import's normalisation is part of what is measured.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import time
from pathlib import Path

SURNAMES = [("佐藤", "さとう"), ("鈴木", "すずき"), ("高橋", "タカハシ"), ("田中", "たなか"),
            ("伊藤", "いとう"), ("渡辺", "ワタナベ"), ("山本", "やまもと"), ("中村", "ナカムラ"),
            ("小林", "こばやし"), ("加藤", "かとう"), ("吉田", "よしだ"), ("山田", "ヤマダ")]
GIVEN = [("太郎", "たろう"), ("花子", "はなこ"), ("翔", "しょう"), ("陽菜", "ひな"),
         ("蓮", "れん"), ("結衣", "ゆい"), ("大輔", "だいすけ"), ("美咲", "みさき")]
JST = dt.timezone(dt.timedelta(hours=9))
MEMBER_HEADER = ["external_id", "email", "phone", "name", "name_kana", "birth_date",
                 "postal_code", "joined_at"]
PURCHASE_HEADER = ["member_external_id", "store_code", "receipt_id", "occurred_at", "total",
                   "returned_amount"]


def external_id(number: int) -> str:
    return f"C{number:08d}"


def phone(number: int) -> str:
    # 090-1xxx-xxxx: valid Japanese mobile numbers, one per member up to 90 million.
    digits = f"{10_000_000 + number:08d}"
    return f"090-{digits[:4]}-{digits[4:]}"


def write_members(path: Path, count: int, rng: random.Random, now: dt.datetime,
                  bad_share: float) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        out = csv.writer(file)
        out.writerow(MEMBER_HEADER)
        for number in range(1, count + 1):
            surname, surname_kana = rng.choice(SURNAMES)
            given, given_kana = rng.choice(GIVEN)
            email = f"Member{number}@Example.com"
            if number % 7 == 0:
                email = f"ｍｅｍｂｅｒ{number}＠example.jp"
            tel = phone(number)
            if number % 5 == 0:
                email = ""
            elif number % 11 == 0:
                tel = ""
            if rng.random() < bad_share:
                if rng.random() < 0.5:
                    email, tel = f"member{number}-at-example.com", ""
                else:
                    tel = phone(max(number - 1, 1))
            joined = now - dt.timedelta(seconds=rng.randrange(5 * 365 * 86_400))
            birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(55 * 365))
            out.writerow([
                external_id(number), email, tel, f"{surname} {given}",
                f"{surname_kana} {given_kana}", birth.isoformat() if number % 3 else "",
                f"{rng.randrange(100, 999)}-{rng.randrange(10_000):04d}",
                joined.astimezone(JST).isoformat(timespec="seconds"),
            ])


def write_purchases(path: Path, count: int, members: int, rng: random.Random,
                    now: dt.datetime, bad_share: float) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        out = csv.writer(file)
        out.writerow(PURCHASE_HEADER)
        for number in range(1, count + 1):
            member = external_id(rng.randrange(1, members + 1))
            occurred = now - dt.timedelta(seconds=rng.randrange(3 * 365 * 86_400))
            total = rng.randrange(100, 30_000)
            returned = "" if rng.random() > 0.02 else str(rng.randrange(1, total + 1))
            when = occurred.astimezone(JST).isoformat(timespec="seconds")
            if rng.random() < bad_share:
                match rng.randrange(3):
                    case 0:
                        member = external_id(members + 1 + number)
                    case 1:
                        total = -total
                    case _:
                        when = when[:19]
            out.writerow([member, f"S{rng.randrange(1, 51):03d}", f"R{number:010d}", when,
                          total, returned])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--purchases", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad-share", type=float, default=0.001,
                        help="share of rows made wrong on purpose (default 0.001)")
    parser.add_argument("--out", default=".", help="directory for members.csv, purchases.csv")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # A fixed "now" too, so the same seed gives the same bytes on any day; it is in the past,
    # so no generated time is in the future when imported.
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    started = time.monotonic()
    write_members(out / "members.csv", args.members, random.Random(args.seed), now,
                  args.bad_share)
    write_purchases(out / "purchases.csv", args.purchases, args.members,
                    random.Random(args.seed + 1), now, args.bad_share)
    print(f"{args.members:,} members and {args.purchases:,} purchases written to {out} "
          f"in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
