"""An OpenID Connect provider for berth's tests, on Authlib's server side.

The protocol is Authlib's (authlib.integrations.flask_oauth2 for the
authorization server, authlib.oauth2.rfc6749's authorization-code grant,
authlib.oauth2.rfc7636's PKCE, authlib.oidc.core's OpenIDCode, which makes
and signs the ID token, and authlib.jose for the keys). This file only holds
what a deployment holds: users, one client, a login form, the discovery
document and the JWKS.

Users log in with their name as password: alice, bob, carol, and admin (in
group berth-admins). Three more get ID tokens that berth must refuse:
wrongaud (audience: another client), expired (expired an hour ago) and
badsig (signed with a key that is not in the JWKS, under the JWKS key's id).

Usage: python3 oidc_provider.py PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
Prints "ready" once it listens. Needs Debian's python3-authlib and
python3-flask (or Authlib and Flask from PyPI).
"""

import html
import os
import sys
import time

# The test provider speaks plain HTTP on loopback.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

from authlib.integrations.flask_oauth2 import AuthorizationServer  # noqa: E402
from authlib.jose import JsonWebKey  # noqa: E402
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, grants  # noqa: E402
from authlib.oauth2.rfc7636 import CodeChallenge  # noqa: E402
from authlib.oidc.core import UserInfo  # noqa: E402
from authlib.oidc.core.grants import OpenIDCode  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402

PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ISSUER = f"http://127.0.0.1:{PORT}"
KEY = JsonWebKey.generate_key("RSA", 2048, {"kid": "berth-test", "use": "sig", "alg": "RS256"}, is_private=True)
ROGUE = JsonWebKey.generate_key("RSA", 2048, {"kid": "berth-test", "use": "sig", "alg": "RS256"}, is_private=True)
USERS = {
    "alice": [],
    "bob": [],
    "carol": [],
    "admin": ["berth-admins"],
    "wrongaud": [],
    "expired": [],
    "badsig": [],
}


class User:
    def __init__(self, name):
        self.name = name

    def get_user_id(self):
        return self.name


class Client(ClientMixin):
    def get_client_id(self):
        return CLIENT_ID

    def get_default_redirect_uri(self):
        return REDIRECT_URI

    def get_allowed_scope(self, scope):
        allowed = {"openid", "profile", "email", "groups"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri == REDIRECT_URI

    def check_client_secret(self, client_secret):
        return client_secret == CLIENT_SECRET

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


CLIENT = Client()
CODES = {}


class Code(AuthorizationCodeMixin):
    def __init__(self, **fields):
        self.__dict__.update(fields)

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_code_challenge(self):
        return self.code_challenge

    def get_code_challenge_method(self):
        return self.code_challenge_method


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def save_authorization_code(self, code, req):
        CODES[code] = Code(
            code=code,
            user=req.user,
            redirect_uri=req.redirect_uri,
            scope=req.scope,
            nonce=req.data.get("nonce"),
            auth_time=int(time.time()),
            code_challenge=req.data.get("code_challenge"),
            code_challenge_method=req.data.get("code_challenge_method"),
        )

    def query_authorization_code(self, code, client):
        return CODES.get(code)

    def delete_authorization_code(self, authorization_code):
        CODES.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        return authorization_code.user


class Oidc(OpenIDCode):
    def exists_nonce(self, nonce, req):
        return any(c.nonce == nonce for c in CODES.values())

    def get_jwt_config(self, grant):
        name = grant.request.user.name
        return {
            "key": ROGUE if name == "badsig" else KEY,
            "alg": "RS256",
            "iss": ISSUER,
            "exp": -3600 if name == "expired" else 3600,
        }

    def get_audiences(self, req):
        return ["someone-else"] if req.user.name == "wrongaud" else [CLIENT_ID]

    def generate_user_info(self, user, scope):
        return UserInfo(
            sub=f"sub-{user.name}",
            preferred_username=user.name,
            email=f"{user.name}@example.org",
            groups=USERS[user.name],
        )


app = Flask(__name__)
server = AuthorizationServer(
    app,
    query_client=lambda client_id: CLIENT if client_id == CLIENT_ID else None,
    save_token=lambda token, req: None,
)
server.register_grant(CodeGrant, [Oidc(require_nonce=True), CodeChallenge(required=True)])


@app.route("/.well-known/openid-configuration")
def discovery():
    return jsonify(
        issuer=ISSUER,
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        jwks_uri=f"{ISSUER}/jwks",
        response_types_supported=["code"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=["RS256"],
        scopes_supported=["openid", "profile", "email", "groups"],
        token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
        code_challenge_methods_supported=["S256"],
        claims_supported=["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "email", "groups"],
    )


@app.route("/jwks")
def jwks():
    return jsonify(keys=[KEY.as_dict(is_private=False)])


LOGIN_FORM = """<!doctype html><html><head><title>test provider: log in</title></head><body>
<h1>Log in</h1>{error}
<form method="post"><input name="username" id="username" placeholder="user">
<input name="password" id="password" type="password" placeholder="password">
<button id="login" type="submit">Log in</button></form></body></html>"""


@app.route("/authorize", methods=["GET", "POST"])
def authorize():
    if request.method == "GET":
        return LOGIN_FORM.format(error="")
    name = request.form.get("username", "")
    if name not in USERS or request.form.get("password") != name:
        return LOGIN_FORM.format(error="<p id=error>wrong user or password</p>"), 200
    response = server.create_authorization_response(grant_user=User(name))
    print(f"authorized {name}: {response.headers.get('Location')}", flush=True)
    return response


@app.route("/token", methods=["POST"])
def token():
    return server.create_token_response()


@app.after_request
def no_cache(response):
    response.headers["Cache-Control"] = "no-store"
    return response


if __name__ == "__main__":
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print("ready", flush=True)
    app.run(host="127.0.0.1", port=int(PORT), threaded=True)
