"""NotificationTask: send an email or an SMS to a customer."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from rayqueue import Priority, RetryPolicy, Task


class NotificationSent(BaseModel):
    """What the (simulated) provider answered."""

    channel: Literal["email", "sms"]
    to: str
    message_id: str


class NotificationTask(Task[NotificationSent]):
    """Send a message; email needs an address with '@', SMS a number in E.164 form."""

    task_name: ClassVar[str] = "shop.notification"
    priority: ClassVar[int] = Priority.NORMAL
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=30)

    channel: Literal["email", "sms"]
    to: str = Field(min_length=3, max_length=254)
    subject: str = ""
    body: str = Field(max_length=10_000)

    @model_validator(mode="after")
    def _address_fits_channel(self) -> NotificationTask:
        if self.channel == "email" and "@" not in self.to:
            raise ValueError(f"email address {self.to!r} has no '@'")
        if self.channel == "sms" and not (self.to.startswith("+") and self.to[1:].isdigit()):
            raise ValueError(f"SMS number {self.to!r} is not in E.164 form (+4915112345678)")
        return self

    def execute(self) -> NotificationSent:
        """Hand the message to the provider (simulated: no network)."""
        digest = abs(hash((self.channel, self.to, self.body))) % 10**10
        return NotificationSent(channel=self.channel, to=self.to, message_id=f"msg-{digest}")
