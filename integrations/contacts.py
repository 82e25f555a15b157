"""The contacts directory: people, the roles they fill and how to reach them.

Kept outside the runbooks (``config/contacts.yaml`` by default) so a plan names
roles ("information department head") and each site says who that is today.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runbooks.yamlfile import load_cached


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="Channel name as registered in integrations.notify (slack, sms, voice, dingtalk, wecom, feishu, webhook, email, log).")
    to: str = Field(description="Where on that channel: Slack user or channel id, phone number in E.164, email address, bot name.")


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Short stable id, used in answers and the audit trail.")
    name: str = Field(description="Display name, e.g. '张伟 Zhang Wei'.")
    roles: list[str] = Field(default_factory=list, description="Role ids this person fills.")
    channels: list[Address] = Field(default_factory=list, description="Ways to reach this person, in order of preference.")
    aliases: list[str] = Field(default_factory=list, description="Other identities that answer as this person (Slack user id, phone number).")


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    people: list[Person] = Field(default_factory=list)
    drill_recipients: list[str] = Field(default_factory=list, description="Person ids that receive every message of a drill instead of the real people.")

    @model_validator(mode="after")
    def _ids_unique(self) -> "Directory":
        seen: set[str] = set()
        for p in self.people:
            if p.id in seen:
                raise ValueError(f"person id '{p.id}' appears twice; give each person one entry")
            seen.add(p.id)
        for d in self.drill_recipients:
            if d not in seen:
                raise ValueError(f"drill recipient '{d}' is not a person in the directory")
        return self

    def by_role(self, role: str) -> list[Person]:
        return [p for p in self.people if role in p.roles]

    def holders(self, roles: list[str]) -> list[Person]:
        """Everyone holding any of these roles, once each, in role order."""
        people: dict[str, Person] = {}
        for role in roles:
            for person in self.by_role(role):
                people.setdefault(person.id, person)
        return list(people.values())

    def roles(self) -> set[str]:
        return {r for p in self.people for r in p.roles}

    def person(self, ident: str) -> Person | None:
        """Find a person by id, name, alias or channel address."""
        for p in self.people:
            if ident in (p.id, p.name) or ident in p.aliases or any(a.to == ident for a in p.channels):
                return p
        return None

    def drill_people(self) -> list[Person]:
        return [p for p in self.people if p.id in self.drill_recipients]


def load_directory(path: Path) -> Directory:
    """The contacts file (read once per version of the file; treat as read-only)."""
    return load_cached(path, Directory.model_validate, Directory)
