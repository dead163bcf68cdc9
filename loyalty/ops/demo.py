"""``loyalty seed-demo``: a few stores, staff and members, so a newcomer can try the API at once.

Idempotent: running it again finds what it made the first time and makes nothing new. Every
demo account shares one password, printed with the summary; never run this on a live
programme.
"""

from __future__ import annotations

from loyalty.access.passwords import Passwords
from loyalty.access.staff import create_staff
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import Connection
from loyalty.core.normalize import normalize_phone
from loyalty.members.profiles import register_member
from schemas.members import ConsentChoice, MemberRegistration

DEMO_PASSWORD = "demo-password"

_STORES = [("TOKYO-01", "Shibuya"), ("OSAKA-01", "Umeda")]
_STAFF = [
    ("admin@demo.example", "admin"),
    ("marketer@demo.example", "marketer"),
    ("analyst@demo.example", "analyst"),
    ("support@demo.example", "support"),
]
_MEMBERS = [
    ("山田 太郎", "やまだ たろう", "taro@demo.example", "090-1234-5678"),
    ("佐藤 花子", "ｻﾄｳ ﾊﾅｺ", "hanako@demo.example", None),
    ("Alex Smith", None, None, "080-2345-6789"),
]


async def seed_demo(conn: Connection, passwords: Passwords, region: str) -> str:
    """Create the demo data that is missing; return a summary to print."""
    password_hash = await passwords.hash(DEMO_PASSWORD)
    lines = [f"demo password for every account below: {DEMO_PASSWORD}"]
    for code, name in _STORES:
        await ensure_store(conn, code=code, name=name)
    for email, role in _STAFF:
        if await conn.fetchval("select 1 from staff where email = $1", email) is None:
            await create_staff(conn, email=email, password_hash=password_hash, role=role,
                               display_name=f"Demo {role}")
        lines.append(f"staff {role:9} {email}")
    for name, kana, contact, phone in _MEMBERS:
        if await conn.fetchval(
            "select 1 from members where email = $1 or phone = $2",
            contact, _demo_phone(phone, region),
        ) is None:
            await register_member(
                conn,
                MemberRegistration(
                    password=DEMO_PASSWORD, name=name, name_kana=kana, email=contact, phone=phone,
                    consents=[ConsentChoice(purpose="marketing_email", granted=True,
                                            text_version="demo-1")],
                ),
                password_hash=password_hash, region=region,
            )
        lines.append(f"member {contact or phone}")
    store = await ensure_store(conn, code=_STORES[0][0])
    terminal = await create_terminal(conn, store=store, name="demo till")
    lines.append(f"terminal for {store.code} (a new key each run): {terminal.api_key}")
    return "\n".join(lines)


def _demo_phone(phone: str | None, region: str) -> str | None:
    return None if phone is None else normalize_phone(phone, region)
