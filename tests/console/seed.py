"""The seeded data the console's tests read: a staff account of each role and a few members
with Japanese names, kana, e-mail addresses and phone numbers."""

from __future__ import annotations

import asyncpg

from loyalty.access.passwords import Passwords
from loyalty.access.staff import create_staff
from loyalty.core.db import Connection, init_connection
from loyalty.members.profiles import register_member
from schemas.members import Member, MemberRegistration

PASSWORD = "correct horse battery staple"
ROLES = ("admin", "support", "marketer", "analyst")
MEMBERS = (
    ("山田 太郎", "ヤマダ タロウ", "taro.yamada@example.jp", "090-1234-5678"),
    ("佐藤 花子", "サトウ ハナコ", "hanako.sato@example.jp", "080-2345-6789"),
    ("鈴木 一郎", "スズキ イチロウ", "ichiro.suzuki@example.jp", "070-3456-7890"),
)


def staff_email(role: str) -> str:
    return f"{role}@staff.example"


async def seed(database_url: str) -> list[Member]:
    """The staff accounts (each signs in with PASSWORD) and the members."""
    conn: Connection = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)
        return await _seed(conn)
    finally:
        await conn.close()


async def _seed(conn: Connection) -> list[Member]:
    passwords = Passwords(time_cost=1, memory_kib=8, parallelism=1)
    password_hash = await passwords.hash(PASSWORD)
    for role in ROLES:
        await create_staff(conn, email=staff_email(role), password_hash=password_hash,
                           role=role, display_name=f"{role} staff")
    return [
        await register_member(
            conn, MemberRegistration(password=PASSWORD, name=name, name_kana=kana, email=email,
                                     phone=phone),
            password_hash=password_hash, region="JP")
        for name, kana, email, phone in MEMBERS
    ]
