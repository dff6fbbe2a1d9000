//! Storage: every query the server makes, behind one [`Store`] type.
//!
//! Callers see only plain records and methods, never SQL. The same queries run on SQLite (the
//! embedded default) and PostgreSQL (production), chosen by the URL's scheme, through sqlx's `Any`
//! driver: placeholders are written `$1, $2, …`, which both accept, and the few statements that
//! differ ask [`Backend`]. Times are milliseconds since the Unix epoch.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use televisit_protocol::{CallStatus, ChatMessage, QualityLevel, QualityReport, Role};

/// Storage errors are internal errors for the API; the message is for the log (no secrets in it).
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// The server's database.
///
/// SQLite allows one writer at a time. Writes go through a pool of one connection (`writer`), so
/// they queue in the process instead of contending for the database lock, and every transaction
/// that writes begins as a writer (`BEGIN IMMEDIATE`): a transaction that reads first and writes
/// later would fail at once (`SQLITE_BUSY_SNAPSHOT`) when another write committed in between.
/// Reads use the other pool and never wait for writes (WAL). The busy timeout covers other
/// processes (the CLI) writing to the same file.
///
/// PostgreSQL takes concurrent writers: one pool serves both, and a transaction that reads a row
/// before changing it locks the row (`FOR UPDATE`).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    writer: AnyPool,
    backend: Backend,
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (or memory): `sqlite://…`.
    Sqlite,
    /// A PostgreSQL server: `postgres://…`.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if it is one of ours.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// Settings every PostgreSQL connection gets: a write blocked by a lock (another process holding
/// the table) fails as busy (503 with `Retry-After`) instead of waiting forever, like SQLite's
/// busy timeout.
const POSTGRES_SETTINGS: &str = "SET lock_timeout = '5s'";

/// Settings every SQLite connection gets (the `Any` driver takes only a URL). A new database gets
/// 1 KiB pages: each stored chat message rewrites its visit's page of the chat index in the
/// write-ahead log, and with SQLite's default 4 KiB pages that log (and its checkpoints) grew by
/// ~60 MB/s under the signaling_hub benchmark's 10 000 messages/s; a database that exists keeps its
/// page size.
const SQLITE_PRAGMAS: &str = "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

/// The writer's settings: the same, and it never checkpoints (see [`checkpoint_periodically`]).
const SQLITE_WRITER_PRAGMAS: &str = "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
     PRAGMA wal_autocheckpoint = 0;";

/// How often the write-ahead log is copied into the database file (see [`Store::open`]). Often,
/// so that each copy is small: a copy and its fsyncs take disk and CPU from the writer beside it,
/// and under the signaling_hub benchmark's 10 000 chat messages/s the chat p99 followed the size
/// of the copies (one run each: 20 ms with a copy every 4 s, 11 ms every second, 8-12 ms every
/// 250 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Pages the write-ahead log may hold before the writer stops for a checkpoint so that the log
/// starts over (256 MiB with 1 KiB pages, ~9 s of the benchmark's load; the file keeps that size
/// on disk). Each start-over holds chat up for two fsyncs, 5-30 ms whatever is left to copy, so
/// the rarer the better: with 64 MiB they came every ~2 s and the chat p99 was 14 ms (one run).
const LOG_RESTART_PAGES: i64 = 256 * 1024;

/// Before the writer's own checkpoint, passive ones on a reading connection copy what came in
/// during the one before, at most this many times or until less than [`CAUGHT_UP_PAGES`] came
/// in: the writer's pass, which holds chat up, then has little left to copy. With 6 passes and
/// 256 pages the steady chat p99 of the signaling_hub benchmark was 14-18 ms; with 12 and 64,
/// 7-11 ms (3 runs each, alternating).
const CATCH_UP_PASSES: usize = 12;

/// Pages that came in during a passive checkpoint below which the log counts as caught up.
const CAUGHT_UP_PAGES: i64 = 64;

/// How long a write may wait for its turn before it fails with [`sqlx::Error::PoolTimedOut`]
/// (the API answers 503 with `Retry-After`).
pub const WRITE_WAIT: Duration = Duration::from_secs(10);

/// A chat message to store (see [`Store::add_chats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChat {
    /// The visit.
    pub appointment_id: String,
    /// Sender.
    pub from: Role,
    /// The text.
    pub text: String,
    /// The sender's number for it (the frame's `seq`): one message per call, sender and number.
    pub client_seq: Option<u64>,
}

/// Whether an error means the database was busy (locked by another writer for longer than the
/// busy timeout, or no write turn within [`WRITE_WAIT`]), rather than broken.
pub fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes (517 is BUSY_SNAPSHOT);
        // PostgreSQL's serialization failure, deadlock and lock timeout.
        sqlx::Error::Database(e) => e.code().is_some_and(|code| match code.parse::<i32>() {
            Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6),
            Err(_) => matches!(&*code, "40001" | "40P01" | "55P03"),
        }),
        _ => false,
    }
}

/// A doctor.
#[derive(Debug, Clone)]
pub struct Doctor {
    /// Id (UUID).
    pub id: String,
    /// Name shown to the patient.
    pub display_name: String,
    /// Sign-in e-mail.
    pub email: String,
    /// argon2 PHC string, if the doctor can sign in on the web.
    pub password_hash: Option<String>,
}

/// An appointment with its video-call fields.
#[derive(Debug, Clone)]
pub struct Appointment {
    /// Id (UUID).
    pub id: String,
    /// The doctor.
    pub doctor_id: String,
    /// The patient.
    pub patient_id: String,
    /// Scheduled time.
    pub scheduled_at_ms: i64,
    /// Signaling room id.
    pub room_id: String,
    /// Call status.
    pub status: CallStatus,
    /// When the doctor started the call.
    pub waiting_since_ms: Option<i64>,
    /// When both participants were first connected.
    pub started_at_ms: Option<i64>,
    /// When the call ended.
    pub ended_at_ms: Option<i64>,
    /// Recorded duration.
    pub duration_seconds: i64,
    /// Recording consent flag.
    pub recording_enabled: bool,
    /// The doctor is sharing a screen.
    pub screen_sharing_active: bool,
}

/// An appointment with the names a doctor's list shows.
#[derive(Debug, Clone)]
pub struct AppointmentListing {
    /// The appointment.
    pub appointment: Appointment,
    /// The patient's display name.
    pub patient_name: String,
}

/// A stored call token (its hash only).
#[derive(Debug, Clone)]
pub struct CallToken {
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// The appointment it grants.
    pub appointment_id: String,
    /// The role it grants.
    pub role: Role,
    /// Expiry.
    pub expires_at_ms: i64,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<i64>,
}

/// A new call token to store.
#[derive(Debug, Clone)]
pub struct NewCallToken {
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// The role it grants.
    pub role: Role,
    /// Expiry.
    pub expires_at_ms: i64,
}

/// A signed-in doctor's web session.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// The doctor.
    pub doctor_id: String,
    /// The session's CSRF token (sent back in `X-CSRF-Token` on state-changing requests).
    pub csrf_token: String,
    /// Expiry.
    pub expires_at_ms: i64,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at_ms: i64,
    /// Which appointment, if known.
    pub appointment_id: Option<String>,
    /// `doctor`, `patient`, `clinic` or `anonymous`.
    pub actor: String,
    /// What happened: `start`, `join`, `leave`, `end`, `refused`, ...
    pub action: String,
    /// Details (an error code, a reason); never a secret or a name.
    pub detail: String,
    /// The client's address.
    pub remote_addr: Option<String>,
}

impl AuditEntry {
    /// An entry; `detail` must hold no secret and no name.
    pub fn new(
        at_ms: i64,
        appointment_id: Option<&str>,
        actor: &str,
        action: &str,
        detail: &str,
        remote_addr: Option<String>,
    ) -> Self {
        AuditEntry {
            at_ms,
            appointment_id: appointment_id.map(str::to_owned),
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail: detail.to_owned(),
            remote_addr,
        }
    }
}

/// A chat message from a row with `id`, `sender_role`, `text` and `sent_at_ms`.
fn chat_message(row: &AnyRow) -> ChatMessage {
    ChatMessage {
        id: row.get("id"),
        from: parse_role(row.get("sender_role")),
        text: row.get("text"),
        sent_at_ms: row.get("sent_at_ms"),
    }
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

fn parse_role(name: &str) -> Role {
    if name == "doctor" {
        Role::Doctor
    } else {
        Role::Patient
    }
}

const APPOINTMENT_COLUMNS: &str = "a.id, a.doctor_id, a.patient_id, a.scheduled_at_ms, a.room_id, \
     a.status, a.waiting_since_ms, a.started_at_ms, a.ended_at_ms, a.duration_seconds, \
     a.recording_enabled, a.screen_sharing_active";

/// An SQLite URL that creates the file when missing (`mode=rwc`), unless it names a mode itself.
fn sqlite_url_creating_the_file(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// A boolean column: PostgreSQL's `BOOLEAN`, or SQLite's integer 0/1.
fn flag(row: &AnyRow, column: &str) -> bool {
    row.try_get::<bool, _>(column).unwrap_or_else(|_| row.get::<i64, _>(column) != 0)
}

fn appointment_from_row(row: &AnyRow) -> Appointment {
    Appointment {
        id: row.get("id"),
        doctor_id: row.get("doctor_id"),
        patient_id: row.get("patient_id"),
        scheduled_at_ms: row.get("scheduled_at_ms"),
        room_id: row.get("room_id"),
        status: CallStatus::parse(row.get::<&str, _>("status")).unwrap_or(CallStatus::NotStarted),
        waiting_since_ms: row.get("waiting_since_ms"),
        started_at_ms: row.get("started_at_ms"),
        ended_at_ms: row.get("ended_at_ms"),
        duration_seconds: row.get("duration_seconds"),
        recording_enabled: flag(row, "recording_enabled"),
        screen_sharing_active: flag(row, "screen_sharing_active"),
    }
}

/// Copies the write-ahead log into the database file every [`CHECKPOINT_EVERY`] until the pool
/// closes, while the writer never checkpoints by itself.
async fn checkpoint_periodically(pool: AnyPool, writer: AnyPool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        let result = checkpoint(&pool, &writer, LOG_RESTART_PAGES).await;
        if let Err(e) = result {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
    }
}

/// One checkpoint: PASSIVE on a reading connection copies what it can beside the writer, without
/// waiting for it. Under steady writes it never catches up completely, and the log starts over
/// only once it has. So past `restart_pages`, passive passes catch up (see [`CATCH_UP_PASSES`]),
/// then one more runs on the writer connection itself: it holds the only write turn, so it copies
/// the rest and the next write starts the log over. Not RESTART on a reading connection: its wait
/// for the writer polls with SQLite's busy handler, whose sleeps (up to 25-50 ms) held chat up
/// long after the lock was free (25-55 ms stalls measured under the signaling_hub benchmark).
/// Whether the log will start over: not while it is under `restart_pages`, nor while another
/// checkpoint runs (another node's, on a shared file).
async fn checkpoint(pool: &AnyPool, writer: &AnyPool, restart_pages: i64) -> Result<bool, sqlx::Error> {
    let mut log_pages = passive_checkpoint(pool).await?;
    if log_pages <= restart_pages {
        return Ok(false);
    }
    for _ in 0..CATCH_UP_PASSES {
        let before = log_pages;
        log_pages = passive_checkpoint(pool).await?;
        if log_pages - before < CAUGHT_UP_PAGES {
            break;
        }
    }
    let started = std::time::Instant::now();
    let starts_over = passive_checkpoint(writer).await? >= 0;
    tracing::debug!(held_ms = started.elapsed().as_millis() as u64, starts_over, "the writer's checkpoint");
    Ok(starts_over)
}

/// Rows per chat INSERT: 5 bound values each, well under SQLite's limit of variables.
const CHAT_ROWS_PER_INSERT: usize = 200;

/// One INSERT of up to [`CHAT_ROWS_PER_INSERT`] chat messages on `connection` (see
/// [`Store::add_chats`]).
async fn insert_chats(
    connection: &mut sqlx::AnyConnection,
    chunk: &[NewChat],
    now_ms: i64,
) -> StoreResult<Vec<ChatMessage>> {
    let mut stored = Vec::with_capacity(chunk.len());
    // `$1, $2, …` by hand: sqlx's query builder writes `?` for the Any driver, which
    // PostgreSQL refuses.
    let rows: Vec<String> = (0..chunk.len())
        .map(|i| {
            let values: Vec<String> = (1..=5).map(|n| format!("${}", 5 * i + n)).collect();
            format!("({})", values.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO chat_messages (appointment_id, sender_role, client_seq, text, sent_at_ms) \
             VALUES {} ON CONFLICT (appointment_id, sender_role, client_seq) DO NOTHING \
             RETURNING id, appointment_id, sender_role, client_seq",
        rows.join(", ")
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    for chat in chunk {
        insert = insert
            .bind(&chat.appointment_id)
            .bind(role_name(chat.from))
            .bind(chat.client_seq.map(|seq| seq as i64))
            .bind(&chat.text)
            .bind(now_ms);
    }
    let mut inserted = insert.fetch_all(&mut *connection).await?;
    // One INSERT numbers its rows in the order of its VALUES; RETURNING's order is
    // unspecified. A row skipped as a duplicate has a number: the next row is not its own.
    inserted.sort_unstable_by_key(|row| row.get::<i64, _>("id"));
    let mut inserted = inserted.iter().peekable();
    for chat in chunk {
        let own = inserted.next_if(|row| {
            row.get::<String, _>("appointment_id") == chat.appointment_id
                && row.get::<String, _>("sender_role") == role_name(chat.from)
                && row.get::<Option<i64>, _>("client_seq") == chat.client_seq.map(|seq| seq as i64)
        });
        let message = match own {
            Some(row) => ChatMessage {
                id: row.get("id"),
                from: chat.from,
                text: chat.text.clone(),
                sent_at_ms: now_ms,
            },
            None => {
                let row = sqlx::query(
                    "SELECT id, sender_role, text, sent_at_ms FROM chat_messages \
                         WHERE appointment_id = $1 AND sender_role = $2 AND client_seq = $3",
                )
                .bind(&chat.appointment_id)
                .bind(role_name(chat.from))
                .bind(chat.client_seq.map(|seq| seq as i64))
                .fetch_one(&mut *connection)
                .await?;
                chat_message(&row)
            }
        };
        stored.push(message);
    }
    Ok(stored)
}

/// A passive checkpoint on a connection of `pool`; the pages in the log, or -1 while another
/// checkpoint runs.
async fn passive_checkpoint(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let (_, log_pages, _) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    Ok(log_pages)
}

impl Store {
    /// Opens the database at `url` and applies the migrations: `sqlite://televisit.db` (created
    /// if missing, in WAL mode) or `postgres://user:password@host/database` (created if missing
    /// and the user may).
    pub async fn open(url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| {
            sqlx::Error::Configuration("the database URL must start with sqlite:// or postgres://".into())
        })?;
        let store = match backend {
            Backend::Sqlite => {
                let url = sqlite_url_creating_the_file(url);
                let options = |pragmas: &'static str| {
                    // No ping before each use: a file that was opened stays open.
                    AnyPoolOptions::new().test_before_acquire(false).after_connect(move |connection, _| {
                        Box::pin(async move { connection.execute(pragmas).await.map(drop) })
                    })
                };
                let writers = options(SQLITE_PRAGMAS).max_connections(1).acquire_timeout(WRITE_WAIT);
                // An in-memory database exists once per connection: there, one pool does both.
                if url.contains(":memory:") || url.contains("mode=memory") {
                    let writer = writers.connect(&url).await?;
                    Store { pool: writer.clone(), writer, backend }
                } else {
                    // The writer never checkpoints: SQLite would do it inside the commit that
                    // fills the log (every 1000 pages), holding up that commit, and every chat
                    // message waiting for it, for the checkpoint's fsyncs (10-90 ms measured under
                    // the signaling_hub benchmark). A reading connection checkpoints in the
                    // background instead; a passive checkpoint runs beside writes.
                    let writer = options(SQLITE_WRITER_PRAGMAS)
                        .max_connections(1)
                        .acquire_timeout(WRITE_WAIT)
                        .connect(&url)
                        .await?;
                    let pool = options(SQLITE_PRAGMAS).max_connections(8).connect(&url).await?;
                    tokio::spawn(checkpoint_periodically(pool.clone(), writer.clone()));
                    Store { pool, writer, backend }
                }
            }
            Backend::Postgres => {
                use sqlx::migrate::MigrateDatabase;
                if !sqlx::Any::database_exists(url).await? {
                    sqlx::Any::create_database(url).await?;
                }
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(WRITE_WAIT)
                    .after_connect(|connection, _| {
                        Box::pin(async move { connection.execute(POSTGRES_SETTINGS).await.map(drop) })
                    })
                    .connect(url)
                    .await?;
                Store { writer: pool.clone(), pool, backend }
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations (idempotent). Each backend has its own set, with the same
    /// tables and columns.
    pub async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.writer).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.writer).await?,
        }
        Ok(())
    }

    /// Closes the pools (on SQLite, flushing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// A transaction that may write: on SQLite it holds the write lock from its start.
    async fn write_transaction(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// What a `SELECT` inside a [`Store::write_transaction`] appends to lock the rows it reads
    /// until the transaction ends (SQLite's transaction already excludes every other writer).
    fn lock_rows(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    // ---- doctors and patients ----

    /// Creates a doctor; returns the id.
    pub async fn create_doctor(
        &self,
        display_name: &str,
        email: &str,
        password_hash: Option<&str>,
        api_token_hash: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO doctors (id, display_name, email, password_hash, api_token_hash, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(display_name)
        .bind(email)
        .bind(password_hash)
        .bind(api_token_hash)
        .bind(now_ms)
        .execute(&self.writer)
        .await?;
        Ok(id)
    }

    fn doctor_from_row(row: &AnyRow) -> Doctor {
        Doctor {
            id: row.get("id"),
            display_name: row.get("display_name"),
            email: row.get("email"),
            password_hash: row.get("password_hash"),
        }
    }

    /// Replaces a doctor's web password hash.
    pub async fn set_doctor_password(&self, id: &str, password_hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE doctors SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// A doctor by id.
    pub async fn doctor(&self, id: &str) -> StoreResult<Option<Doctor>> {
        let row =
            sqlx::query("SELECT * FROM doctors WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(Self::doctor_from_row))
    }

    /// A doctor by sign-in e-mail.
    pub async fn doctor_by_email(&self, email: &str) -> StoreResult<Option<Doctor>> {
        let row = sqlx::query("SELECT * FROM doctors WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Self::doctor_from_row))
    }

    /// A doctor by the hash of their app token.
    pub async fn doctor_by_api_token_hash(&self, hash: &str) -> StoreResult<Option<Doctor>> {
        let row = sqlx::query("SELECT * FROM doctors WHERE api_token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Self::doctor_from_row))
    }

    /// Creates a patient; returns the id.
    pub async fn create_patient(&self, display_name: &str, now_ms: i64) -> StoreResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO patients (id, display_name, created_at_ms) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(display_name)
            .bind(now_ms)
            .execute(&self.writer)
            .await?;
        Ok(id)
    }

    /// A patient's display name.
    pub async fn patient_name(&self, id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT display_name FROM patients WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("display_name")))
    }

    // ---- appointments ----

    /// Creates an appointment with a fresh room id.
    pub async fn create_appointment(
        &self,
        doctor_id: &str,
        patient_id: &str,
        scheduled_at_ms: i64,
        recording_enabled: bool,
        now_ms: i64,
    ) -> StoreResult<Appointment> {
        let id = uuid::Uuid::new_v4().to_string();
        let room_id = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query(
            "INSERT INTO appointments (id, doctor_id, patient_id, scheduled_at_ms, room_id, \
             recording_enabled, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(doctor_id)
        .bind(patient_id)
        .bind(scheduled_at_ms)
        .bind(&room_id)
        .bind(recording_enabled)
        .bind(now_ms)
        .execute(&self.writer)
        .await?;
        Ok(self.appointment(&id).await?.expect("just inserted"))
    }

    /// An appointment by id.
    pub async fn appointment(&self, id: &str) -> StoreResult<Option<Appointment>> {
        let sql = format!("SELECT {APPOINTMENT_COLUMNS} FROM appointments a WHERE a.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(appointment_from_row))
    }

    /// A doctor's appointments scheduled in `[from_ms, to_ms)`, earliest first.
    pub async fn doctor_appointments(
        &self,
        doctor_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<AppointmentListing>> {
        let sql = format!(
            "SELECT {APPOINTMENT_COLUMNS}, p.display_name AS patient_name FROM appointments a \
             JOIN patients p ON p.id = a.patient_id \
             WHERE a.doctor_id = $1 AND a.scheduled_at_ms >= $2 AND a.scheduled_at_ms < $3 \
             ORDER BY a.scheduled_at_ms"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(doctor_id)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| AppointmentListing {
                appointment: appointment_from_row(row),
                patient_name: row.get("patient_name"),
            })
            .collect())
    }

    /// Number of appointments per call status, for metrics.
    pub async fn count_by_status(&self) -> StoreResult<Vec<(CallStatus, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM appointments GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((CallStatus::parse(r.get::<&str, _>("status"))?, r.get("n"))))
            .collect())
    }

    /// Starts (or re-issues) the call: revokes the appointment's live tokens of the given roles,
    /// stores the new ones and moves `not_started` to `waiting`. Returns false if the call is
    /// in progress or ended (the caller answers 409).
    pub async fn start_call(
        &self,
        appointment_id: &str,
        tokens: &[NewCallToken],
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.write_transaction().await?;
        match call_status(&mut tx, appointment_id, self.lock_rows()).await? {
            Some(CallStatus::NotStarted) | Some(CallStatus::Waiting) => {}
            Some(CallStatus::InProgress) if tokens.iter().all(|t| t.role == Role::Doctor) => {}
            _ => return Ok(false),
        }
        replace_tokens(&mut tx, appointment_id, tokens, now_ms).await?;
        sqlx::query(
            "UPDATE appointments SET status = 'waiting', waiting_since_ms = $1 \
             WHERE id = $2 AND status = 'not_started'",
        )
        .bind(now_ms)
        .bind(appointment_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A fresh token for one role of a started (waiting or in-progress) call, the role's earlier
    /// tokens revoked. False if the call is not started or has ended.
    pub async fn replace_call_token(
        &self,
        appointment_id: &str,
        token: &NewCallToken,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.write_transaction().await?;
        if !matches!(
            call_status(&mut tx, appointment_id, self.lock_rows()).await?,
            Some(CallStatus::Waiting) | Some(CallStatus::InProgress)
        ) {
            return Ok(false);
        }
        replace_tokens(&mut tx, appointment_id, std::slice::from_ref(token), now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A call token by its hash.
    pub async fn call_token(&self, token_hash: &str) -> StoreResult<Option<CallToken>> {
        let row = sqlx::query("SELECT * FROM call_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| CallToken {
            token_hash: r.get("token_hash"),
            appointment_id: r.get("appointment_id"),
            role: parse_role(r.get("role")),
            expires_at_ms: r.get("expires_at_ms"),
            revoked_at_ms: r.get("revoked_at_ms"),
        }))
    }

    /// Moves a waiting call to in progress (both participants connected for the first time).
    pub async fn mark_in_progress(&self, appointment_id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE appointments SET status = 'in_progress', started_at_ms = $1 \
             WHERE id = $2 AND status = 'waiting'",
        )
        .bind(now_ms)
        .bind(appointment_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Ends the call: status `ended`, end time, duration (from `started_at`, zero if the two never
    /// met), every token revoked. Returns the appointment after the change, or `None` if it was
    /// already ended (or does not exist).
    pub async fn end_call(&self, appointment_id: &str, now_ms: i64) -> StoreResult<Option<Appointment>> {
        let mut tx = self.write_transaction().await?;
        let updated = sqlx::query(
            "UPDATE appointments SET status = 'ended', ended_at_ms = $1, screen_sharing_active = $2, \
             duration_seconds = CASE WHEN started_at_ms IS NULL OR started_at_ms > $1 THEN 0 \
                                     ELSE ($1 - started_at_ms) / 1000 END \
             WHERE id = $3 AND status <> 'ended'",
        )
        .bind(now_ms)
        .bind(false)
        .bind(appointment_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE call_tokens SET revoked_at_ms = $1 WHERE appointment_id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(appointment_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.appointment(appointment_id).await
    }

    /// Records whether the doctor is sharing a screen.
    pub async fn set_screen_sharing(&self, appointment_id: &str, active: bool) -> StoreResult<()> {
        sqlx::query("UPDATE appointments SET screen_sharing_active = $1 WHERE id = $2")
            .bind(active)
            .bind(appointment_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ---- chat ----

    /// Stores chat messages atomically and returns them with their ids, in order. A message
    /// whose sender already stored one under the same `client_seq` in this call (sent again
    /// because its node or process died before anyone heard it was stored) is not stored twice:
    /// the stored one is returned in its place.
    pub async fn add_chats(&self, chats: &[NewChat], now_ms: i64) -> StoreResult<Vec<ChatMessage>> {
        if chats.len() <= CHAT_ROWS_PER_INSERT {
            // One INSERT is a transaction of its own: one trip to the database's thread instead
            // of three (BEGIN, INSERT, COMMIT), a third of the chat writer's handoffs under load.
            let mut writer = self.writer.acquire().await?;
            return insert_chats(&mut writer, chats, now_ms).await;
        }
        let mut stored = Vec::with_capacity(chats.len());
        let mut tx = self.write_transaction().await?;
        for chunk in chats.chunks(CHAT_ROWS_PER_INSERT) {
            stored.extend(insert_chats(&mut tx, chunk, now_ms).await?);
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The highest `client_seq` of the chat a sender stored in this call (0: none).
    pub async fn last_chat_seq(&self, appointment_id: &str, from: Role) -> StoreResult<u64> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(client_seq) FROM chat_messages WHERE appointment_id = $1 AND sender_role = $2",
        )
        .bind(appointment_id)
        .bind(role_name(from))
        .fetch_one(&self.pool)
        .await?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }

    /// The visit's chat, oldest first.
    pub async fn chat_history(&self, appointment_id: &str) -> StoreResult<Vec<ChatMessage>> {
        let rows = sqlx::query(
            "SELECT id, sender_role, text, sent_at_ms FROM chat_messages \
             WHERE appointment_id = $1 ORDER BY id",
        )
        .bind(appointment_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(chat_message).collect())
    }

    // ---- quality reports ----

    /// Stores a participant's quality report unless the call already has `limit` of that role's.
    /// Returns whether it was stored.
    pub async fn add_quality_report(
        &self,
        appointment_id: &str,
        from: Role,
        report: &QualityReport,
        now_ms: i64,
        limit: usize,
    ) -> StoreResult<bool> {
        let stored = sqlx::query(
            "INSERT INTO quality_reports \
             (appointment_id, reporter_role, at_ms, level, rtt_ms, loss_percent, jitter_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE (SELECT COUNT(*) FROM quality_reports \
             WHERE appointment_id = $1 AND reporter_role = $2) < $8",
        )
        .bind(appointment_id)
        .bind(role_name(from))
        .bind(now_ms)
        .bind(report.level.as_str())
        .bind(report.rtt_ms)
        .bind(report.loss_percent)
        .bind(report.jitter_ms)
        .bind(limit as i64)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(stored == 1)
    }

    /// The visit's stored quality reports, oldest first.
    pub async fn quality_reports(&self, appointment_id: &str) -> StoreResult<Vec<StoredQualityReport>> {
        let rows = sqlx::query(
            "SELECT reporter_role, at_ms, level, rtt_ms, loss_percent, jitter_ms FROM quality_reports \
             WHERE appointment_id = $1 ORDER BY at_ms, id",
        )
        .bind(appointment_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredQualityReport {
                at_ms: r.get("at_ms"),
                from: parse_role(r.get("reporter_role")),
                report: QualityReport {
                    level: QualityLevel::parse(r.get("level")).unwrap_or(QualityLevel::Lost),
                    rtt_ms: r.get("rtt_ms"),
                    loss_percent: r.get("loss_percent"),
                    jitter_ms: r.get("jitter_ms"),
                },
            })
            .collect())
    }

    // ---- web sessions ----

    /// Stores a web session under the hash of its cookie value.
    pub async fn create_session(
        &self,
        session_hash: &str,
        session: &WebSession,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO web_sessions (session_hash, doctor_id, csrf_token, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session_hash)
        .bind(&session.doctor_id)
        .bind(&session.csrf_token)
        .bind(now_ms)
        .bind(session.expires_at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// A web session by the hash of its cookie value.
    pub async fn session(&self, session_hash: &str) -> StoreResult<Option<WebSession>> {
        let row = sqlx::query("SELECT * FROM web_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| WebSession {
            doctor_id: r.get("doctor_id"),
            csrf_token: r.get("csrf_token"),
            expires_at_ms: r.get("expires_at_ms"),
        }))
    }

    /// Deletes a web session (sign-out).
    pub async fn delete_session(&self, session_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM web_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ---- audit ----

    /// Appends an audit entry.
    pub async fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, appointment_id, actor, action, detail, remote_addr) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.at_ms)
        .bind(&entry.appointment_id)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.detail)
        .bind(&entry.remote_addr)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The audit entries, oldest first; of one appointment, or all when `None`.
    pub async fn audit_entries(&self, appointment_id: Option<&str>) -> StoreResult<Vec<AuditEntry>> {
        let filter =
            AuditFilter { appointment_id: appointment_id.map(str::to_owned), ..AuditFilter::default() };
        Ok(self.audit_page(&filter, i64::MAX).await?.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Up to `limit` audit entries matching `filter`, oldest first, each with its id (the cursor
    /// of the next page is the last id).
    pub async fn audit_page(&self, filter: &AuditFilter, limit: i64) -> StoreResult<Vec<(i64, AuditEntry)>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE id > $1 \
             AND (CAST($2 AS TEXT) IS NULL OR appointment_id = $2) \
             AND at_ms >= $3 AND at_ms < $4 ORDER BY id LIMIT $5",
        )
        .bind(filter.after_id.unwrap_or(0))
        .bind(&filter.appointment_id)
        .bind(filter.from_ms.unwrap_or(i64::MIN))
        .bind(filter.to_ms.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let entry = AuditEntry {
                    at_ms: r.get("at_ms"),
                    appointment_id: r.get("appointment_id"),
                    actor: r.get("actor"),
                    action: r.get("action"),
                    detail: r.get("detail"),
                    remote_addr: r.get("remote_addr"),
                };
                (r.get("id"), entry)
            })
            .collect())
    }

    // ---- retention ----

    /// Deletes what is past its retention at `cutoffs` and says how much went.
    pub async fn purge(&self, cutoffs: &PurgeCutoffs) -> StoreResult<PurgeCounts> {
        let mut tx = self.write_transaction().await?;
        let mut counts = PurgeCounts::default();
        if let Some(ended_before_ms) = cutoffs.chat_of_visits_ended_before_ms {
            counts.chat_messages = sqlx::query(
                "DELETE FROM chat_messages WHERE appointment_id IN \
                 (SELECT id FROM appointments WHERE status = 'ended' AND ended_at_ms < $1)",
            )
            .bind(ended_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            counts.quality_reports = sqlx::query(
                "DELETE FROM quality_reports WHERE appointment_id IN \
                 (SELECT id FROM appointments WHERE status = 'ended' AND ended_at_ms < $1)",
            )
            .bind(ended_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        counts.call_tokens =
            sqlx::query("DELETE FROM call_tokens WHERE expires_at_ms < $1 OR revoked_at_ms < $1")
                .bind(cutoffs.tokens_dead_before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        counts.web_sessions = sqlx::query("DELETE FROM web_sessions WHERE expires_at_ms <= $1")
            .bind(cutoffs.now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if let Some(before_ms) = cutoffs.audit_before_ms {
            counts.audit_entries = sqlx::query("DELETE FROM audit_log WHERE at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(counts)
    }
}

/// A participant's quality report as stored, for the visit's summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredQualityReport {
    /// When the server received it, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who reported it.
    pub from: Role,
    /// The report: level, and the figures measured.
    #[serde(flatten)]
    pub report: QualityReport,
}

/// Which audit entries [`Store::audit_page`] returns; every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Of this appointment only.
    pub appointment_id: Option<String>,
    /// At or after this time.
    pub from_ms: Option<i64>,
    /// Before this time.
    pub to_ms: Option<i64>,
    /// With an id greater than this (the previous page's last).
    pub after_id: Option<i64>,
}

/// The times before which [`Store::purge`] deletes each kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCutoffs {
    /// Now: web sessions that expired by then go.
    pub now_ms: i64,
    /// The chat of visits that ended before this goes; `None` keeps chat.
    pub chat_of_visits_ended_before_ms: Option<i64>,
    /// Call tokens that were revoked or expired before this go (until then an old link is
    /// answered "expired" rather than "invalid").
    pub tokens_dead_before_ms: i64,
    /// Audit entries older than this go; `None` keeps them.
    pub audit_before_ms: Option<i64>,
}

/// What one [`Store::purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Chat messages.
    pub chat_messages: u64,
    /// Quality reports (kept as long as the chat).
    pub quality_reports: u64,
    /// Call tokens.
    pub call_tokens: u64,
    /// Web sessions.
    pub web_sessions: u64,
    /// Audit entries.
    pub audit_entries: u64,
}

/// An appointment's call status, read in `tx` (`None`: no such appointment).
async fn call_status(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    appointment_id: &str,
    lock_rows: &str,
) -> StoreResult<Option<CallStatus>> {
    let sql = format!("SELECT status FROM appointments WHERE id = $1{lock_rows}");
    let status: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(appointment_id).fetch_optional(&mut **tx).await?;
    Ok(status.as_deref().and_then(CallStatus::parse))
}

/// Revokes each role's earlier tokens of the appointment and stores the new ones, in `tx`.
async fn replace_tokens(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    appointment_id: &str,
    tokens: &[NewCallToken],
    now_ms: i64,
) -> StoreResult<()> {
    for token in tokens {
        sqlx::query(
            "UPDATE call_tokens SET revoked_at_ms = $1 \
                 WHERE appointment_id = $2 AND role = $3 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(appointment_id)
        .bind(role_name(token.role))
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO call_tokens (token_hash, appointment_id, role, created_at_ms, expires_at_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token_hash)
        .bind(appointment_id)
        .bind(role_name(token.role))
        .bind(now_ms)
        .bind(token.expires_at_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages in the write-ahead log (a passive checkpoint reports them, once the store's own
    /// periodic one is not running).
    async fn log_pages(pool: &AnyPool) -> i64 {
        loop {
            match passive_checkpoint(pool).await.unwrap() {
                -1 => tokio::time::sleep(Duration::from_millis(1)).await,
                pages => return pages,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_writes_the_write_ahead_log_starts_over_once_past_its_limit() {
        let path = std::env::temp_dir().join(format!("televisit-wal-{}.db", uuid::Uuid::new_v4()));
        let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&store.pool).await.unwrap();
        assert_eq!(page_size, 1024, "a new database has 1 KiB pages");
        sqlx::query("CREATE TABLE filler (bytes BLOB)").execute(&store.writer).await.unwrap();
        // A writer that never pauses, as under the benchmark's steady chat.
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let (stop, written) =
            (std::sync::Arc::new(AtomicBool::new(false)), std::sync::Arc::new(AtomicU64::new(0)));
        let writes = tokio::spawn({
            let (writer, stop, written) = (store.writer.clone(), stop.clone(), written.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    sqlx::query("INSERT INTO filler (bytes) VALUES (randomblob(3000))")
                        .execute(&writer)
                        .await
                        .unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        const LIMIT: i64 = 400;
        while log_pages(&store.pool).await <= 2 * LIMIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Passive checkpoints beside the writer alone: the log keeps growing.
        let first = log_pages(&store.pool).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = log_pages(&store.pool).await;
        assert!(before > first, "the log grew on: {first} pages, then {before}");

        // The store's own periodic checkpoint may be running beside this one.
        let mut tries = 0;
        while !checkpoint(&store.pool, &store.writer, LIMIT).await.unwrap() {
            tries += 1;
            assert!(tries < 1000, "no checkpoint got the log to start over");
        }
        // The next write starts the log over: after a few writes it holds only those.
        let checkpointed_at = written.load(Ordering::Relaxed);
        while written.load(Ordering::Relaxed) < checkpointed_at + 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let after = log_pages(&store.pool).await;
        stop.store(true, Ordering::Relaxed);
        writes.await.unwrap();
        assert!(
            after < before / 2,
            "the log started over: {after} pages after the checkpoint, {before} before"
        );
        store.pool.close().await;
        store.writer.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
