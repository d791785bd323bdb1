"""Accounts: sign-up by mailed code, login, rotating sessions, password changes.

Sessions: each login or registration opens a ``user_sessions`` row. The
refresh token names its session (``sid``) and carries a random ``jti`` whose
hash the row keeps; every refresh swaps it for a new one. A refresh token
presented after it was swapped is a stolen or replayed one, so the whole
session is revoked. Access tokens name the session too, and every request
reads the session and its user afresh (one query), so logout, revocation,
deactivation and deletion take effect on the very next request in every
worker.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from gemini_core.codes import OneTimeCodes
from gemini_core.entities import (
    NewUser,
    NewUserSession,
    OtpPurpose,
    User,
    UserChanges,
    UserSession,
)
from gemini_core.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    VerificationFailedError,
)
from gemini_core.passwords import check_password
from gemini_core.ports import (
    Clock,
    PasswordHasher,
    SessionRepository,
    TokenClaims,
    TokenCodec,
    TokenType,
    UserRepository,
)
from gemini_core.telemetry import LoginFailed, Telemetry
from gemini_core.validation import check_username, clean_full_name, normalize_email

security_log = logging.getLogger("gemini.security")

BAD_LOGIN = "Incorrect email or password."
BAD_TOKEN = "The token is invalid or has expired."  # noqa: S105
DEAD_SESSION = "This session has ended; sign in again."
# Writes that record activity are spared when the last one is this recent.
ACTIVITY_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class SessionRules:
    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, as recorded on the session it opens."""

    user_agent: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated request: the user and session as they are right now."""

    user: User
    session: UserSession


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    username: str
    password: str
    full_name: str | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccountService:
    def __init__(
        self,
        *,
        users: UserRepository,
        sessions: SessionRepository,
        codes: OneTimeCodes,
        hasher: PasswordHasher,
        tokens: TokenCodec,
        clock: Clock,
        rules: SessionRules,
        telemetry: Telemetry,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._codes = codes
        self._hasher = hasher
        self._tokens = tokens
        self._clock = clock
        self._rules = rules
        self._telemetry = telemetry
        self._decoy_hash: str | None = None

    # --- codes -------------------------------------------------------------

    async def send_code(self, email: str, purpose: OtpPurpose) -> int:
        """Mail a code; return how many seconds it lives.

        Answers the same whether or not an account exists: a code is issued
        and mailed either way, so neither the reply nor its timing tells.
        """
        await self._codes.send(normalize_email(email), purpose)
        return self._codes.ttl_seconds

    # --- sign-up and sign-in -------------------------------------------------

    async def register(
        self, email: str, code: str, registration: Registration, client: Client
    ) -> TokenPair:
        email = normalize_email(email)
        if normalize_email(registration.email, field="user_data.email") != email:
            raise InvalidInputError(
                "The account's email must be the one the code was sent to.",
                field="user_data.email",
            )
        username = check_username(registration.username, field="user_data.username")
        full_name = clean_full_name(registration.full_name, field="user_data.full_name")
        check_password(
            registration.password,
            field="user_data.password",
            user_inputs=(email, email.partition("@")[0], username),
        )
        otp = await self._codes.check(email, OtpPurpose.EMAIL_VERIFICATION, code)
        password_hash = await self._hasher.hash(registration.password)
        # A taken email or username raises ConflictError here and leaves the
        # code unspent, so the person can pick another username and retry.
        user = await self._users.add(
            NewUser(
                email=email,
                username=username,
                full_name=full_name,
                password_hash=password_hash,
                is_verified=True,
            )
        )
        await self._codes.consume(otp)
        security_log.info("account created", extra={"event": "register", "user_id": user.id})
        return await self._open_session(user, client)

    async def _decoy(self) -> str:
        if self._decoy_hash is None:
            self._decoy_hash = await self._hasher.hash(secrets.token_urlsafe(16))
        return self._decoy_hash

    async def login(self, email: str, password: str, client: Client) -> TokenPair:
        try:
            email = normalize_email(email)
        except InvalidInputError:
            email = ""
        user = await self._users.get_by_email(email) if email else None
        if user is None:
            # Spend one verification anyway, so timing does not reveal accounts.
            await self._hasher.verify(await self._decoy(), password)
            self._telemetry.login_failed(LoginFailed("unknown_email", email=email, user_id=None))
            raise AuthenticationError(BAD_LOGIN)
        if not await self._hasher.verify(user.password_hash, password):
            self._telemetry.login_failed(
                LoginFailed("wrong_password", email=email, user_id=user.id)
            )
            raise AuthenticationError(BAD_LOGIN)
        if not user.can_sign_in:
            security_log.warning(
                "login refused", extra={"event": "login_refused", "user_id": user.id}
            )
            raise PermissionDeniedError("This account is deactivated.")
        changes = UserChanges(last_login_at=self._clock.now())
        if self._hasher.needs_rehash(user.password_hash):
            changes = UserChanges(
                last_login_at=changes.last_login_at,
                password_hash=await self._hasher.hash(password),
            )
        user = await self._users.update(user.id, changes)
        return await self._open_session(user, client)

    # --- tokens ----------------------------------------------------------------

    def _pair(self, user: User, session: UserSession, refresh_jti: str) -> TokenPair:
        now = self._clock.now()
        access_expires = min(now + self._rules.access_token_ttl, session.expires_at)
        access = TokenClaims(
            type=TokenType.ACCESS,
            user_id=user.id,
            session_id=session.id,
            jti=secrets.token_urlsafe(16),
            issued_at=now,
            expires_at=access_expires,
        )
        refresh = TokenClaims(
            type=TokenType.REFRESH,
            user_id=user.id,
            session_id=session.id,
            jti=refresh_jti,
            issued_at=now,
            expires_at=session.expires_at,
        )
        return TokenPair(
            access_token=self._tokens.encode(access),
            refresh_token=self._tokens.encode(refresh),
            expires_in=int((access_expires - now).total_seconds()),
            user=user,
        )

    async def _open_session(self, user: User, client: Client) -> TokenPair:
        jti = secrets.token_urlsafe(32)
        session = await self._sessions.add(
            NewUserSession(
                user_id=user.id,
                refresh_token_hash=_digest(jti),
                expires_at=self._clock.now() + self._rules.refresh_token_ttl,
                user_agent=client.user_agent,
                ip=client.ip,
            )
        )
        return self._pair(user, session, jti)

    async def _live_session(
        self, token: str, token_type: TokenType, now: datetime
    ) -> tuple[TokenClaims, UserSession, User]:
        """The token's claims, with its session and user as they are now;
        ``AuthenticationError`` unless both may still act."""
        claims = self._tokens.decode(token, expected_type=token_type, now=now)
        found = await self._sessions.get_with_user(claims.session_id)
        if found is None or found[0].user_id != claims.user_id:
            raise AuthenticationError(BAD_TOKEN)
        session, user = found
        if not session.is_live(now) or not user.can_sign_in:
            raise AuthenticationError(DEAD_SESSION)
        return claims, session, user

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = self._clock.now()
        claims, session, user = await self._live_session(refresh_token, TokenType.REFRESH, now)
        presented = _digest(claims.jti)
        new_jti = secrets.token_urlsafe(32)
        rotated = hmac.compare_digest(presented, session.refresh_token_hash) and (
            await self._sessions.rotate(
                session.id, expected_hash=presented, new_hash=_digest(new_jti), now=now
            )
        )
        if not rotated:
            # Spent already: someone replayed it. End the session for everyone.
            await self._sessions.revoke(session.id, now)
            security_log.warning(
                "refresh token reused; session revoked",
                extra={"event": "refresh_reuse", "user_id": user.id, "session_id": session.id},
            )
            raise AuthenticationError(BAD_TOKEN)
        return self._pair(user, session, new_jti)

    async def authenticate(self, access_token: str) -> Principal:
        now = self._clock.now()
        _, session, user = await self._live_session(access_token, TokenType.ACCESS, now)
        if now - session.last_used_at >= ACTIVITY_RESOLUTION:
            await self._sessions.touch(session.id, now)
        if user.last_seen_at is None or now - user.last_seen_at >= ACTIVITY_RESOLUTION:
            await self._users.touch(user.id, now)
        return Principal(user=user, session=session)

    # --- the signed-in user ---------------------------------------------------

    async def logout(self, principal: Principal) -> None:
        await self._sessions.revoke(principal.session.id, self._clock.now())
        security_log.info(
            "signed out",
            extra={
                "event": "logout",
                "user_id": principal.user.id,
                "session_id": principal.session.id,
            },
        )

    async def update_profile(
        self, principal: Principal, *, full_name: str | None = None, username: str | None = None
    ) -> User:
        """``None`` leaves a field as it is; a blank full name clears it."""
        cleaned_name = None if full_name is None else clean_full_name(full_name)
        changes = UserChanges(
            username=None if username is None else check_username(username),
            full_name=cleaned_name,
            clear_full_name=full_name is not None and cleaned_name is None,
        )
        return await self._users.update(principal.user.id, changes)

    async def change_password(
        self, principal: Principal, current_password: str, new_password: str
    ) -> None:
        user = principal.user
        check_password(
            new_password,
            field="new_password",
            user_inputs=(user.email, user.email.partition("@")[0], user.username),
        )
        if not await self._hasher.verify(user.password_hash, current_password):
            security_log.warning(
                "wrong current password",
                extra={"event": "password_change_failed", "user_id": user.id},
            )
            raise VerificationFailedError("The current password is incorrect.")
        await self._users.update(
            user.id, UserChanges(password_hash=await self._hasher.hash(new_password))
        )
        revoked = await self._sessions.revoke_all(
            user.id, self._clock.now(), except_id=principal.session.id
        )
        security_log.info(
            "password changed; other sessions revoked",
            extra={"event": "password_changed", "user_id": user.id, "revoked": revoked},
        )

    async def reset_password(self, email: str, code: str, new_password: str) -> None:
        email = normalize_email(email)
        check_password(new_password, field="new_password", user_inputs=(email,))
        otp = await self._codes.check(email, OtpPurpose.PASSWORD_RESET, code)
        user = await self._users.get_by_email(email)
        if user is None or user.is_deleted:
            raise VerificationFailedError(
                "The code is wrong, expired or already used; ask for a new one."
            )
        await self._codes.consume(otp)
        await self._users.update(
            user.id, UserChanges(password_hash=await self._hasher.hash(new_password))
        )
        revoked = await self._sessions.revoke_all(user.id, self._clock.now())
        security_log.info(
            "password reset; every session revoked",
            extra={"event": "password_reset", "user_id": user.id, "revoked": revoked},
        )

    async def list_sessions(self, principal: Principal) -> list[UserSession]:
        return await self._sessions.list_live(principal.user.id, self._clock.now())

    async def revoke_session(self, principal: Principal, session_id: int) -> None:
        session = await self._sessions.get(session_id)
        if session is None or session.user_id != principal.user.id:
            raise NotFoundError("No such session.")
        if not await self._sessions.revoke(session_id, self._clock.now()):
            raise NotFoundError("No such session.")
        security_log.info(
            "session revoked",
            extra={
                "event": "session_revoked",
                "user_id": principal.user.id,
                "session_id": session_id,
            },
        )

    # --- start-up ----------------------------------------------------------------

    async def ensure_admin(self, email: str, password: str) -> User:
        """Create the first admin if no account has this email; never touch an existing one."""
        email = normalize_email(email, field="ADMIN_EMAIL")
        existing = await self._users.get_by_email(email)
        if existing is not None:
            if not existing.is_admin:
                security_log.warning(
                    "ADMIN_EMAIL belongs to an account that is not an admin; left as it is",
                    extra={"event": "admin_bootstrap_skipped", "user_id": existing.id},
                )
            return existing
        check_password(password, field="ADMIN_PASSWORD")
        password_hash = await self._hasher.hash(password)
        base = "".join(
            c for c in email.partition("@")[0] if c.isascii() and (c.isalnum() or c in "_.-")
        )
        base = (base or "admin")[:28].ljust(3, "_")
        for n in range(1, 1000):
            try:
                user = await self._users.add(
                    NewUser(
                        email=email,
                        username=base if n == 1 else f"{base}{n}",
                        password_hash=password_hash,
                        is_verified=True,
                        is_admin=True,
                    )
                )
            except ConflictError as exc:
                if exc.field == "username":
                    continue
                # Another worker starting at the same moment created it first.
                raced = await self._users.get_by_email(email)
                if raced is None:
                    raise
                return raced
            security_log.warning(
                "first admin created", extra={"event": "admin_bootstrap", "user_id": user.id}
            )
            return user
        raise ConflictError("No free username for the first admin.", field="username")
