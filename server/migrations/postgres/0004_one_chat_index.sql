-- Chat needs one index, not two: every query by visit (its history, the highest `client_seq`, the
-- purge) is served by the unique (appointment_id, sender_role, client_seq) index, and a visit's
-- history is small enough to sort. Each stored message then rewrites one index page, not two.
DROP INDEX chat_messages_by_appointment;
