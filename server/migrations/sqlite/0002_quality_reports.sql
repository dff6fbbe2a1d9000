-- The quality reports the participants' apps send during a call (on each change of level), for
-- the visit's summary. At most a bounded number per call and role (Store::add_quality_report);
-- purged with the chat (retention).
CREATE TABLE quality_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    appointment_id TEXT NOT NULL REFERENCES appointments(id),
    reporter_role TEXT NOT NULL CHECK (reporter_role IN ('doctor', 'patient')),
    at_ms INTEGER NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('excellent', 'good', 'poor', 'lost')),
    rtt_ms REAL,
    loss_percent REAL,
    jitter_ms REAL
);
CREATE INDEX quality_reports_by_appointment ON quality_reports(appointment_id, reporter_role, id);
