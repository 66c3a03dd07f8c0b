"""A small app written the way a user writes one: a database dependency, a mailer, endpoints that queue emails.

tests/test_example_app.py tests it the way its author would; tests/test_cli.py draws its graph.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from di_tasks import BackgroundTasks, Container, Depends

container = Container()


@dataclass
class Settings:
    """Where the real services live."""

    database_url: str = "postgresql://prod/app"
    smtp_host: str = "smtp.example.com"


def get_settings() -> Settings:
    """App-wide settings, made once per app lifetime."""
    return Settings()


@dataclass
class Database:
    """The real database (a dict here, to keep the example small)."""

    url: str
    users: dict[int, str] = field(default_factory=dict[int, str])
    closed: bool = False

    async def add_user(self, email: str) -> int:
        """Store a user and return its id."""
        user_id = len(self.users) + 1
        self.users[user_id] = email
        return user_id


async def get_db(settings: Annotated[Settings, Depends(get_settings, scope="app")]) -> AsyncIterator[Database]:
    """One database session per request, closed when the request scope exits (after the tasks ran)."""
    db = Database(settings.database_url)
    try:
        yield db
    finally:
        db.closed = True


@dataclass
class Mailer:
    """Sends email; the real one talks to an SMTP server."""

    host: str
    sent: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])

    def send(self, to: str, subject: str) -> None:
        """Send one email."""
        raise ConnectionError(f"cannot reach {self.host} from here")


def get_mailer(settings: Annotated[Settings, Depends(get_settings, scope="app")]) -> Mailer:
    """The mailer the email task uses."""
    return Mailer(settings.smtp_host)


def send_welcome(email: str, subject: str = "Welcome!", mailer: Mailer = Depends(get_mailer)) -> None:
    """The background task: its mailer is injected when it runs (a default marker keeps add_task's typing happy)."""
    mailer.send(email, subject)


async def signup(email: str, db: Annotated[Database, Depends(get_db)], tasks: BackgroundTasks) -> dict[str, int]:
    """The endpoint: store the user, then email them after the response."""
    user_id = await db.add_user(email)
    tasks.add_task(send_welcome, email, subject=f"Welcome, user {user_id}!")
    return {"id": user_id}


async def count_users(db: Annotated[Database, Depends(get_db)]) -> int:
    """Another endpoint, with no task."""
    return len(db.users)


async def health(db: Annotated[Database, Depends(get_db)]) -> dict[str, str]:
    """A health check: which database the app talks to."""
    return {"database": db.url}


ENDPOINTS = (signup, count_users, health)
