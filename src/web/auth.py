"""``/auth``: sign-up by mailed code, login, tokens, the signed-in user, sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from gemini_core.accounts import Principal, Registration, TokenPair
from gemini_core.entities import OtpPurpose
from gemini_core.errors import (
    AuthenticationError,
    ConflictError,
    PermissionDeniedError,
    VerificationFailedError,
)
from web.container import Container
from web.contract import documents
from web.principal import client_of, provide_principal
from web.schemas import Email, FullName, NewPassword, Username, UserOut, stated, to_wire

Password = Annotated[str, msgspec.Meta(max_length=1024)]  # any: it is only compared
# A wrong code of any shape is a 400, like a wrong code of the right shape.
Code = Annotated[str, msgspec.Meta(max_length=32), stated(pattern=r"^[0-9]{6}$")]


class SendOtpIn(msgspec.Struct):
    email: Email
    purpose: Literal["email_verification", "password_reset"]


class SendOtpOut(msgspec.Struct):
    message: str
    expires_in: int


class UserDataIn(msgspec.Struct):
    """Only these fields are read: admin, active or verified flags cannot be set here."""

    email: Email
    username: Username
    password: NewPassword
    full_name: FullName | None = None


class RegisterIn(msgspec.Struct):
    email: Email
    otp_code: Code
    user_data: UserDataIn


class LoginIn(msgspec.Struct):
    email: Email
    password: Password


class RefreshIn(msgspec.Struct):
    refresh_token: Annotated[str, msgspec.Meta(max_length=4096)]


class TokenPairOut(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: UserOut

    @classmethod
    def of(cls, pair: TokenPair) -> TokenPairOut:
        return to_wire(cls, pair, token_type="bearer")  # noqa: S106  (the OAuth 2 token type)


class ProfileIn(msgspec.Struct):
    full_name: FullName | msgspec.UnsetType | None = msgspec.UNSET
    username: Username | msgspec.UnsetType = msgspec.UNSET


class ChangePasswordIn(msgspec.Struct):
    current_password: Password
    new_password: NewPassword


class ResetPasswordIn(msgspec.Struct):
    email: Email
    otp_code: Code
    new_password: NewPassword


class SessionOut(msgspec.Struct):
    id: int
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool


class SessionsOut(msgspec.Struct):
    items: list[SessionOut]


SENT = "If the address can receive mail, a code is on its way."


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]  # noqa: RUF012  (Litestar reads class attributes)
    signed_in = {"principal": Provide(provide_principal)}  # noqa: RUF012

    @post(
        "/send-otp",
        status_code=HTTP_202_ACCEPTED,
        operation_id="sendOtp",
        opt=documents(example={"email": "ada@example.com", "purpose": "email_verification"}),
    )
    async def send_otp(
        self, data: JSONBody[SendOtpIn], container: NamedDependency[Container]
    ) -> SendOtpOut:
        """Mail a 6-digit code; the answer is the same whether or not an account exists."""
        expires_in = await container.accounts.send_code(data.email, OtpPurpose(data.purpose))
        return SendOtpOut(message=SENT, expires_in=expires_in)

    @post(
        "/register",
        operation_id="register",
        opt=documents(
            raises=[VerificationFailedError, ConflictError],
            example={
                "email": "ada@example.com",
                "otp_code": "123456",
                "user_data": {
                    "email": "ada@example.com",
                    "username": "ada",
                    "password": "correct horse battery staple",
                    "full_name": "Ada Lovelace",
                },
            },
        ),
    )
    async def register(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RegisterIn],
        container: NamedDependency[Container],
    ) -> TokenPairOut:
        """Create a verified account with a code sent for `email_verification`."""
        user = data.user_data
        registration = Registration(
            email=user.email,
            username=user.username,
            password=user.password,
            full_name=user.full_name,
        )
        pair = await container.accounts.register(
            data.email, data.otp_code, registration, client_of(request)
        )
        return TokenPairOut.of(pair)

    @post(
        "/login",
        status_code=HTTP_200_OK,
        operation_id="login",
        opt=documents(
            raises=[AuthenticationError, PermissionDeniedError],
            example={"email": "ada@example.com", "password": "correct horse battery staple"},
        ),
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginIn],
        container: NamedDependency[Container],
    ) -> TokenPairOut:
        pair = await container.accounts.login(data.email, data.password, client_of(request))
        return TokenPairOut.of(pair)

    @post(
        "/refresh",
        status_code=HTTP_200_OK,
        operation_id="refresh",
        opt=documents(raises=[AuthenticationError]),
    )
    async def refresh(
        self, data: JSONBody[RefreshIn], container: NamedDependency[Container]
    ) -> TokenPairOut:
        """Swap a refresh token for a new pair; the one presented is spent."""
        return TokenPairOut.of(await container.accounts.refresh(data.refresh_token))

    @post("/logout", status_code=HTTP_204_NO_CONTENT, operation_id="logout", dependencies=signed_in)
    async def logout(
        self, principal: NamedDependency[Principal], container: NamedDependency[Container]
    ) -> None:
        await container.accounts.logout(principal)

    @get("/me", operation_id="getMe", dependencies=signed_in)
    async def me(self, principal: NamedDependency[Principal]) -> UserOut:
        return to_wire(UserOut, principal.user)

    @patch(
        "/me",
        operation_id="updateMe",
        dependencies=signed_in,
        opt=documents(raises=[ConflictError]),
    )
    async def update_me(
        self,
        data: JSONBody[ProfileIn],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> UserOut:
        full_name = None if data.full_name is msgspec.UNSET else (data.full_name or "")
        username = None if data.username is msgspec.UNSET else data.username
        user = await container.accounts.update_profile(
            principal, full_name=full_name, username=username
        )
        return to_wire(UserOut, user)

    @post(
        "/change-password",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="changePassword",
        dependencies=signed_in,
        opt=documents(raises=[VerificationFailedError]),
    )
    async def change_password(
        self,
        data: JSONBody[ChangePasswordIn],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> None:
        """Every other session of the user is signed out."""
        await container.accounts.change_password(
            principal, data.current_password, data.new_password
        )

    @post(
        "/reset-password",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="resetPassword",
        opt=documents(raises=[VerificationFailedError]),
    )
    async def reset_password(
        self, data: JSONBody[ResetPasswordIn], container: NamedDependency[Container]
    ) -> None:
        """Set a new password with a code sent for `password_reset`; every session ends."""
        await container.accounts.reset_password(data.email, data.otp_code, data.new_password)

    @get("/sessions", operation_id="listSessions", dependencies=signed_in)
    async def sessions(
        self, principal: NamedDependency[Principal], container: NamedDependency[Container]
    ) -> SessionsOut:
        sessions = await container.accounts.list_sessions(principal)
        current = principal.session.id
        return SessionsOut(
            items=[to_wire(SessionOut, s, current=s.id == current) for s in sessions]
        )

    @delete(
        "/sessions/{session_id:int}",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="revokeSession",
        dependencies=signed_in,
    )
    async def revoke_session(
        self,
        session_id: FromPath[int],
        principal: NamedDependency[Principal],
        container: NamedDependency[Container],
    ) -> None:
        await container.accounts.revoke_session(principal, session_id)
