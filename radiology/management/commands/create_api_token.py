"""Print a user's API token, creating it on first use: `TOKEN=$(python manage.py create_api_token alice)`.

Tokens can also be created per user in the admin (Auth Token). The token carries the user's role: a user
without the clinician or admin group gets a token that every clinical endpoint answers with 403.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from radiology.roles import is_clinician
from radiology.services import api_token_issue


class Command(BaseCommand):
    help = "Print the API token of USERNAME, creating it if needed (--rotate replaces it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--rotate", action="store_true", help="invalidate the current token and issue a new one"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: options["username"]})
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {options['username']!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {options['username']!r} is inactive; activate the account first.")
        key, created = api_token_issue(user=user, rotate=options["rotate"])
        if not is_clinician(user):
            # stderr, so `TOKEN=$(...)` still captures only the key.
            self.stderr.write(
                f"warning: {user.get_username()} has no clinician or admin role; the API will refuse it."
            )
        if created and options["verbosity"] > 1:
            self.stderr.write("created a new token")
        self.stdout.write(key)
