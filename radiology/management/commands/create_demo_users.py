"""The demo accounts (two clinicians and an admin), created once with passwords made for this installation.

Nothing is published: each password is generated on the first start and printed that once, so the person
who started the application can sign in straight away. An existing account is never changed (a restart
does not reset a password someone may have changed, or re-open one an admin disabled).
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from radiology.roles import ADMIN_GROUP, CLINICIAN_GROUP, ensure_role_groups

DEMO_USERS = (
    # username, group, is_staff/superuser
    ("clinician", CLINICIAN_GROUP, False),
    # A colleague: a final call against a confident model band goes to a second reader, never its own.
    ("clinician2", CLINICIAN_GROUP, False),
    ("admin", ADMIN_GROUP, True),
)


def generate_password() -> str:
    # Four groups of four from an alphabet without look-alikes: easy to type from a terminal, 80 bits.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


class Command(BaseCommand):
    help = "Create the demo accounts (two clinicians, one admin) if missing, and print their new passwords."

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_role_groups()
        user_model = get_user_model()
        self.stdout.write("Demo accounts:")
        for username, group_name, is_admin in DEMO_USERS:
            with transaction.atomic():
                if user_model.objects.filter(username=username).exists():
                    self.stdout.write(f"  {group_name:<10} user: {username:<10} (exists; password unchanged)")
                    continue
                password = generate_password()
                user = user_model.objects.create_user(
                    username=username, password=password, is_staff=is_admin, is_superuser=is_admin
                )
                user.groups.add(Group.objects.get(name=group_name))
            self.stdout.write(
                f"  {group_name:<10} user: {username:<10} password: {password}   (shown once: note it now)"
            )
