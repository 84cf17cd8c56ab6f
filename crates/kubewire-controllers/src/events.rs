//! core/v1 Events about objects (what `kubectl describe` shows).
//!
//! kube-runtime's recorder writes `events.k8s.io/v1`; kube-controller-manager's controllers
//! write core/v1 Events through client-go's broadcaster, and that is the group every API server
//! (ours included) serves, so this writes those directly. An Event lives in its object's
//! namespace (where `kubectl describe` looks for it); Events of cluster-scoped objects go to
//! the `default` namespace, as client-go puts them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

/// Writes Events on behalf of one component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
        }
    }

    /// Records a Warning Event about `object`.
    pub async fn warning<K>(&self, object: &K, reason: &str, message: &str) -> kube::Result<()>
    where
        K: Resource<DynamicType = ()>,
    {
        let now = jiff::Timestamp::now();
        let name = object.name_any();
        let involved_namespace = object.meta().namespace.clone();
        let namespace = involved_namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(name),
                namespace: involved_namespace,
                uid: object.meta().uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
