"""`manage.py oauth application|token`: Regis as its own OAuth 2.0 authorization server.

``oauth application NAME`` registers a confidential client that may use the password
grant (a WebRTC app logging in with an extension's number and SIP password) and call
/o/introspect/ with its credentials; its secret is printed once (django-oauth-toolkit
stores a hash). ``oauth token EXT`` issues an access token for an extension directly
(its introspection ``username`` is the extension number), e.g. to provision a device.
"""
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from oauth2_provider.models import get_application_model

from registrar import oauth


class Command(BaseCommand):
    help = "Register OAuth clients and issue bearer tokens for extensions (Regis's own authorization server)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        application = actions.add_parser("application", help="register a confidential client (password grant)")
        application.add_argument("name")
        application.add_argument("--client-id", help="default: generated")
        token = actions.add_parser("token", help="issue an access token for an extension")
        token.add_argument("number")
        token.add_argument("--application", required=True, help="name of the client the token is issued to")
        token.add_argument("--scope", default="sip")
        token.add_argument("--seconds", type=int, help="lifetime (default: OAUTH_TOKEN_SECONDS)")

    def handle(self, *args, action, **options):
        try:
            if action == "application":
                application, secret = oauth.create_application(options["name"], client_id=options["client_id"])
                self.stdout.write(f"client_id: {application.client_id}\nclient_secret: {secret}\n"
                                  "(the secret is shown this once)")
            else:
                application = get_application_model().objects.filter(name=options["application"]).first()
                if application is None:
                    raise CommandError(f"There is no OAuth application named {options['application']!r}.")
                token = oauth.issue_token(options["number"], application, scope=options["scope"],
                                          seconds=options["seconds"])
                self.stdout.write(token.token)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
