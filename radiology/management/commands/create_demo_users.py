from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from radiology.roles import ADMIN_GROUP, CLINICIAN_GROUP, ensure_role_groups

DEMO_USERS = (
    # username, password, group, is_staff/superuser
    ("clinician", "review-fractures-1", CLINICIAN_GROUP, False),
    ("admin", "audit-fractures-1", ADMIN_GROUP, True),
)


class Command(BaseCommand):
    help = "Create (or reset) the demo clinician and admin accounts and print their credentials."

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_role_groups()
        user_model = get_user_model()
        for username, password, group_name, is_admin in DEMO_USERS:
            user, _ = user_model.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = is_admin
            user.is_superuser = is_admin
            user.save()
            user.groups.add(Group.objects.get(name=group_name))
            self.stdout.write(f"  {group_name:<10} user: {username:<10} password: {password}")
