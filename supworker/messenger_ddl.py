"""The messenger's six tables exactly as the Node worker's schema defines them.

The Node API created them with these statements; supworker creates them with the same ones
where they are missing (an empty database), and adds to them only through supworker.adoption.
Changing a statement here changes nothing in a database that has the table: write a new
migration instead.
"""

MESSAGES = """CREATE TABLE messages (
  id UUID PRIMARY KEY,
  sender_id UUID NOT NULL,
  chat_id UUID NOT NULL,
  content TEXT,
  media_url TEXT,
  thumbnail_url TEXT,
  media_metadata JSONB,
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW(),
  deleted_at TIMESTAMP
)"""

STORIES = """CREATE TABLE stories (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  media_url TEXT,
  thumbnail_url TEXT,
  created_at TIMESTAMP DEFAULT NOW(),
  deleted_at TIMESTAMP
)"""

USER_SESSIONS = """CREATE TABLE user_sessions (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  device_id TEXT,
  last_active_at TIMESTAMP,
  is_active BOOLEAN DEFAULT true,
  created_at TIMESTAMP DEFAULT NOW()
)"""

USER_PREKEYS = """CREATE TABLE user_prekeys (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  prekey_id INTEGER NOT NULL,
  public_key TEXT NOT NULL,
  used_at TIMESTAMP,
  created_at TIMESTAMP DEFAULT NOW(),
  UNIQUE(user_id, prekey_id)
)"""

NOTIFICATIONS = """CREATE TABLE notifications (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  type TEXT NOT NULL,
  title TEXT,
  body TEXT,
  success BOOLEAN,
  created_at TIMESTAMP DEFAULT NOW()
)"""

TEMPORARY_FILES = """CREATE TABLE temporary_files (
  id UUID PRIMARY KEY,
  file_path TEXT NOT NULL,
  created_at TIMESTAMP DEFAULT NOW()
)"""
