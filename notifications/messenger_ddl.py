"""The messenger's table that only the notifications read, exactly as its contract defines it
(docs/notifications.md#muted-chats).

The messenger owns and writes it; it may create it itself with this statement, and supworker's
migration creates it with the same one where it is missing (supworker.adoption.CreateSeedTable).
Changing the statement here changes nothing in a database that has the table: write a new
migration instead.
"""

MUTED_CHATS = """CREATE TABLE muted_chats (
  user_id UUID NOT NULL,
  chat_id UUID NOT NULL,
  mode TEXT NOT NULL CHECK (mode IN ('silent', 'skip')),
  until TIMESTAMPTZ,
  PRIMARY KEY (user_id, chat_id)
)"""
