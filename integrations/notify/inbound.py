"""Answers that arrive from outside the Prefect UI (Slack buttons, SMS replies, signed links)."""

from fastapi import APIRouter

router = APIRouter()
