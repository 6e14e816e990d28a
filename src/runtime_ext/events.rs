use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};
use serde_json::json;

/// Longest name of an Event (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;

/// How many times an Event is sent when the API server fails (client-go's recorder also tries
/// a bounded number of times), and the wait before the second try (doubled after each).
const TRIES: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Publishes `events.k8s.io/v1` Events, each a new object.
///
/// kube-runtime's `Recorder` names an Event `<object name>.<nanoseconds>`, which is longer than
/// a name may be for objects whose names are near 253 characters, so the API server refuses it;
/// and it keeps every Event for six minutes to fold repeats into a series (kube-rs/kube#1655),
/// while each of this operator's Events is worth its own entry. Until the recorder lets callers
/// bound the name, Events are created here, with the object's name shortened to fit.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    /// Per series Event (namespace, name): the resourceVersion and count this process wrote.
    series: Arc<Mutex<SeriesVersions>>,
}

type SeriesVersions = HashMap<(String, String), (String, i32)>;

/// One Event about one object.
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: String,
    pub note: String,
}

/// The object of kind `K` named `name` in `namespace`, with `uid`, as an Event names it.
pub fn regarding<K: kube::Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
    uid: &str,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into()),
        kind: Some(K::kind(&()).into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(uid.into()),
        ..ObjectReference::default()
    }
}

impl EventPublisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
            series: Arc::default(),
        }
    }

    pub async fn publish(&self, note: Note, regarding: ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let name = event_name(
            regarding.name.as_deref().unwrap_or(&self.controller),
            &format!("{:x}", now.as_nanosecond()),
        );
        let event = self.event(name, now, note, regarding);
        let api = self.api(&event);
        let mut wait = FIRST_RETRY;
        for tries in 1.. {
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => break,
                // The same name: an earlier try got through, its answer did not.
                Err(kube::Error::Api(status)) if status.code == 409 && tries > 1 => break,
                Err(error) if tries < TRIES && is_transient(&error) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Publishes `note` as the next of a series: one Event per object and `series` (until the
    /// API server lets it expire), whose count grows with each occurrence, as client-go's
    /// recorder folds repeats. Only the series may change once an Event exists, so the note
    /// should read the same for every occurrence. For what recurs without bound (a settlement per batch), so
    /// that etcd holds one Event per object, not one per occurrence.
    pub async fn publish_series(
        &self,
        series: &str,
        note: Note,
        regarding: ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let name = event_name(
            regarding.name.as_deref().unwrap_or(&self.controller),
            series,
        );
        let event = self.event(name.clone(), now, note, regarding);
        let api = self.api(&event);
        let key = (
            event.metadata.namespace.clone().unwrap_or_default(),
            name.clone(),
        );
        // The Event this process last wrote: one patch, conditional on its resourceVersion.
        let known = self.lock_series().get(&key).cloned();
        if let Some((version, count)) = known {
            match self.count(&api, &name, &version, count + 1, now).await {
                Ok(written) => {
                    self.remember(key, &written, count + 1);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                    self.lock_series().remove(&key);
                }
                Err(error) => return Err(error),
            }
        }
        match api.create(&PostParams::default(), &event).await {
            Ok(written) => {
                self.remember(key, &written, 1);
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
        // It exists, written before this process knew it (a restart, another replica).
        let Some(existing) = api.get_opt(&name).await? else {
            return Ok(());
        };
        let count = existing.series.as_ref().map_or(1, |s| s.count) + 1;
        let version = existing.metadata.resource_version.unwrap_or_default();
        match self.count(&api, &name, &version, count, now).await {
            Ok(written) => {
                self.remember(key, &written, count);
                Ok(())
            }
            // A concurrent update won: an Event is a report, not state.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Sets the series count of the Event `name`, if it is still at `version`.
    async fn count(
        &self,
        api: &Api<Event>,
        name: &str,
        version: &str,
        count: i32,
        now: Timestamp,
    ) -> Result<Event, kube::Error> {
        let patch = json!({
            "metadata": { "resourceVersion": version },
            "series": EventSeries { count, last_observed_time: MicroTime(now) },
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    fn remember(&self, key: (String, String), written: &Event, count: i32) {
        let version = written
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        self.lock_series().insert(key, (version, count));
    }

    fn lock_series(&self) -> std::sync::MutexGuard<'_, SeriesVersions> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn api(&self, event: &Event) -> Api<Event> {
        Api::namespaced(
            self.client.clone(),
            event.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    fn event(&self, name: String, now: Timestamp, note: Note, regarding: ObjectReference) -> Event {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match note.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(note.reason.into()),
            action: Some(note.action),
            note: Some(note.note),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

/// A failure on the server's side or on the way (5xx, 429, a broken connection, a timeout),
/// worth another try; a refusal (403, 422, ...) is not.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        _ => true,
    }
}

/// `<object>.<suffix>` (the suffix: nanoseconds in hex, or a series' name), the object's name
/// cut so the whole fits in a name (and still ends in a letter or digit, as every part of a
/// DNS-1123 subdomain must).
fn event_name(object: &str, suffix: &str) -> String {
    let suffix = format!(".{suffix}");
    let room = MAX_NAME - suffix.len();
    let cut = &object[..object.len().min(room)];
    format!("{}{suffix}", cut.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    use crate::mock_api::{ApiServer, mock_client};

    type Handle = ApiServer;

    fn publisher() -> (EventPublisher, Handle) {
        let (client, server) = mock_client();
        (EventPublisher::new(client, "test", "test-0"), server)
    }

    fn note() -> Note {
        Note {
            type_: EventType::Normal,
            reason: "LevelChanged",
            action: "BronzeToSilver".into(),
            note: "level Bronze -> Silver (score 5)".into(),
        }
    }

    fn regarding() -> ObjectReference {
        ObjectReference {
            kind: Some("Customer".into()),
            name: Some("alice".into()),
            namespace: Some("ns".into()),
            ..ObjectReference::default()
        }
    }

    /// Answers the next request (a POST) with `code`; returns the name of the Event it created.
    async fn answer(handle: &mut Handle, code: u16) -> String {
        let (method, _, event) = expect(handle, code, |event| event.clone()).await;
        assert_eq!(method, http::Method::POST);
        event["metadata"]["name"].as_str().unwrap().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_is_sent_again_while_the_server_fails_a_bounded_number_of_times() {
        let (events, mut handle) = publisher();
        let sent = tokio::spawn(async move { events.publish(note(), regarding()).await });
        let first = answer(&mut handle, 500).await;
        let second = answer(&mut handle, 201).await;
        assert_eq!(first, second, "a retry is the same Event");
        sent.await.unwrap().expect("published on the second try");

        let (events, mut handle) = publisher();
        let sent = tokio::spawn(async move { events.publish(note(), regarding()).await });
        for _ in 0..TRIES {
            answer(&mut handle, 503).await;
        }
        assert!(sent.await.unwrap().is_err(), "given up after {TRIES} tries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_event_is_not_sent_again_and_a_late_success_counts() {
        let (events, mut handle) = publisher();
        let sent = tokio::spawn(async move { events.publish(note(), regarding()).await });
        answer(&mut handle, 403).await;
        assert!(sent.await.unwrap().is_err(), "refused: no second try");

        // The first try got through but its answer was lost: the second finds it there.
        let (events, mut handle) = publisher();
        let sent = tokio::spawn(async move { events.publish(note(), regarding()).await });
        answer(&mut handle, 504).await;
        answer(&mut handle, 409).await;
        sent.await.unwrap().expect("the first try had landed");
    }

    /// Takes the next request: its method, path and body; answers `code` with `body` (a
    /// Status for anything but 2xx).
    async fn expect(
        handle: &mut Handle,
        code: u16,
        body: impl FnOnce(&serde_json::Value) -> serde_json::Value,
    ) -> (http::Method, String, serde_json::Value) {
        let exchange = handle.next().await;
        let (method, path, sent) = (
            exchange.method.clone(),
            exchange.path.clone(),
            exchange.body.clone(),
        );
        let code = StatusCode::from_u16(code).unwrap();
        if code.is_success() {
            exchange.answer(code, body(&sent));
        } else {
            exchange.fail(code);
        }
        (method, path, sent)
    }

    /// The Event `sent` as the API server stores it, at `version` with `count` occurrences.
    fn stored(sent: &serde_json::Value, version: &str, count: i32) -> serde_json::Value {
        let mut event = sent.clone();
        event["metadata"]["resourceVersion"] = json!(version);
        if count > 1 {
            event["series"] =
                json!({"count": count, "lastObservedTime": "2026-12-02T00:00:00.000000Z"});
        }
        event
    }

    #[tokio::test]
    async fn a_series_is_one_event_whose_count_grows_on_its_own_version() {
        use http::Method;
        const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";
        let (events, mut handle) = publisher();
        let events = std::sync::Arc::new(events);
        let publish = || {
            let events = events.clone();
            tokio::spawn(async move { events.publish_series("settled", note(), regarding()).await })
        };
        let named = format!("{EVENTS}/alice.settled");

        // The first occurrence creates it.
        let sent = publish();
        let (method, path, body) = expect(&mut handle, 201, |e| stored(e, "1", 1)).await;
        assert_eq!((method, path.as_str()), (Method::POST, EVENTS));
        assert_eq!(body["metadata"]["name"], "alice.settled");
        sent.await.unwrap().expect("created");

        // The next counts on the version it wrote.
        let sent = publish();
        let (method, path, body) = expect(&mut handle, 200, |e| stored(e, "2", 2)).await;
        assert_eq!((method, path.as_str()), (Method::PATCH, named.as_str()));
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        assert_eq!(body["series"]["count"], 2);
        sent.await.unwrap().expect("counted");

        // Someone else changed it (409): create, find it exists, count on what is there.
        let sent = publish();
        let (_, _, body) = expect(&mut handle, 409, |_| json!({})).await;
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        let (method, _, _) = expect(&mut handle, 409, |_| json!({})).await;
        assert_eq!(method, Method::POST);
        let (method, path, _) = expect(&mut handle, 200, |_| {
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"name": "alice.settled", "namespace": "ns", "resourceVersion": "9"},
                   "eventTime": "2026-12-02T00:00:00.000000Z",
                   "series": {"count": 5, "lastObservedTime": "2026-12-02T00:00:00.000000Z"}})
        })
        .await;
        assert_eq!((method, path.as_str()), (Method::GET, named.as_str()));
        let (method, _, body) = expect(&mut handle, 200, |e| stored(e, "10", 6)).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            (
                &body["metadata"]["resourceVersion"],
                &body["series"]["count"]
            ),
            (&json!("9"), &json!(6))
        );
        sent.await.unwrap().expect("counted on what was there");

        // Gone meanwhile (404 on the count): created anew.
        let sent = publish();
        let (_, _, body) = expect(&mut handle, 404, |_| json!({})).await;
        assert_eq!(body["metadata"]["resourceVersion"], "10");
        let (method, path, _) = expect(&mut handle, 201, |e| stored(e, "11", 1)).await;
        assert_eq!((method, path.as_str()), (Method::POST, EVENTS));
        sent.await.unwrap().expect("created again");
    }

    #[test]
    fn event_names_fit_for_the_longest_object_names() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let now = &format!("{:x}", now.as_nanosecond());
        let short = event_name("alice", now);
        assert!(short.starts_with("alice.") && short.len() < 30, "{short}");
        let long = format!("{}-{}", "a".repeat(240), "b".repeat(12));
        assert_eq!(long.len(), 253);
        let name = event_name(&long, now);
        assert!(name.len() <= MAX_NAME, "{} characters", name.len());
        // A cut that ends in '-' would make an invalid name.
        let dashes = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        let name = event_name(&dashes, now);
        assert!(name.starts_with(&"a".repeat(235)), "{name}");
        assert!(!name.contains("-."), "{name}");
    }
}
