-- Televisit's storage. Times are milliseconds since the Unix epoch (INTEGER), so the same schema
-- maps to PostgreSQL BIGINT without conversion code in the callers.

CREATE TABLE doctors (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,            -- argon2id PHC string; NULL: no web sign-in
    api_token_hash TEXT UNIQUE,    -- SHA-256 hex of the per-doctor app token
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE patients (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE appointments (
    id TEXT PRIMARY KEY,
    doctor_id TEXT NOT NULL REFERENCES doctors(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    scheduled_at_ms INTEGER NOT NULL,
    room_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'not_started'
        CHECK (status IN ('not_started', 'waiting', 'in_progress', 'ended')),
    waiting_since_ms INTEGER,      -- when the doctor started the call
    started_at_ms INTEGER,         -- when both participants were first connected
    ended_at_ms INTEGER,
    duration_seconds INTEGER NOT NULL DEFAULT 0,
    recording_enabled INTEGER NOT NULL DEFAULT 0,
    screen_sharing_active INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX appointments_by_doctor ON appointments(doctor_id, scheduled_at_ms);

CREATE TABLE call_tokens (
    token_hash TEXT PRIMARY KEY,   -- SHA-256 hex; the token itself is never stored
    appointment_id TEXT NOT NULL REFERENCES appointments(id),
    role TEXT NOT NULL CHECK (role IN ('doctor', 'patient')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX call_tokens_by_appointment ON call_tokens(appointment_id);

CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    appointment_id TEXT NOT NULL REFERENCES appointments(id),
    sender_role TEXT NOT NULL CHECK (sender_role IN ('doctor', 'patient')),
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL
);
CREATE INDEX chat_messages_by_appointment ON chat_messages(appointment_id, id);

CREATE TABLE web_sessions (
    session_hash TEXT PRIMARY KEY, -- SHA-256 hex of the cookie value
    doctor_id TEXT NOT NULL REFERENCES doctors(id),
    csrf_token TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    appointment_id TEXT,
    actor TEXT NOT NULL,           -- 'doctor', 'patient', 'clinic', 'anonymous'
    action TEXT NOT NULL,          -- 'start', 'join', 'leave', 'end', 'refused', ...
    detail TEXT NOT NULL DEFAULT '',
    remote_addr TEXT
);
CREATE INDEX audit_log_by_appointment ON audit_log(appointment_id, id);
