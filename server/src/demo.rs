//! A demo visit a newcomer can open: a doctor who can sign in, a patient, an appointment starting
//! now, and the call already started so both join links work.

use televisit_protocol::Role;

use crate::calls::join_link;
use crate::error::{ApiError, ApiResult};
use crate::secrets::{hash_password, hash_secret, new_call_token, random_secret};
use crate::store::NewCallToken;
use crate::SharedState;

/// The demo doctor's sign-in e-mail.
pub const DEMO_EMAIL: &str = "doctor@demo.televisit.test";

/// What the demo created.
pub struct Demo {
    /// The doctor's sign-in e-mail.
    pub email: String,
    /// The doctor's password (new on every run; printed once).
    pub password: String,
    /// The appointment.
    pub appointment_id: String,
    /// The doctor's join link.
    pub doctor_link: String,
    /// The patient's join link.
    pub patient_link: String,
}

/// Creates (or refreshes) the demo doctor and a new demo appointment with a started call.
pub async fn create(state: &SharedState) -> ApiResult<Demo> {
    let now = state.clock.now_ms();
    let password = random_secret()[..16].to_owned();
    let doctor_id = match state.store.doctor_by_email(DEMO_EMAIL).await? {
        Some(doctor) => {
            state.store.set_doctor_password(&doctor.id, &hash_password(&password)).await?;
            doctor.id
        }
        None => {
            let api_token_hash = hash_secret(&format!("tvd.{}", random_secret()));
            state
                .store
                .create_doctor(
                    "Dr. Dana Demo",
                    DEMO_EMAIL,
                    Some(&hash_password(&password)),
                    Some(&api_token_hash),
                    now,
                )
                .await?
        }
    };
    let patient_id = state.store.create_patient("Pat Demo", now).await?;
    let appointment = state.store.create_appointment(&doctor_id, &patient_id, now, false, now).await?;
    let expires_at_ms = now + state.config.token_ttl_seconds as i64 * 1000;
    let doctor_token = new_call_token(expires_at_ms);
    let patient_token = new_call_token(expires_at_ms);
    let tokens = [
        NewCallToken { token_hash: hash_secret(&doctor_token), role: Role::Doctor, expires_at_ms },
        NewCallToken { token_hash: hash_secret(&patient_token), role: Role::Patient, expires_at_ms },
    ];
    if !state.store.start_call(&appointment.id, &tokens, now).await? {
        return Err(ApiError::internal("demo appointment could not be started"));
    }
    Ok(Demo {
        email: DEMO_EMAIL.into(),
        password,
        doctor_link: join_link(&state.config, &appointment.id, &doctor_token),
        patient_link: join_link(&state.config, &appointment.id, &patient_token),
        appointment_id: appointment.id,
    })
}
