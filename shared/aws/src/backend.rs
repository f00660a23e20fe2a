//! The AWS backend as the services take it: the ports on the SDK clients.

use crate::catalog::GlueCatalog;
use crate::dynamo::{DynamoAuditLog, DynamoStateStore};
use crate::glue::{GlueCrawler, GlueJobRunner};
use crate::s3::S3Store;
use crate::sns::{SnsBus, SnsNotifier};
use crate::sqs::SqsQueue;
use crate::{AwsClients, CallCounter};
use choreo_domain::Config;
use choreo_ports::{PortError, Ports, Queue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every port on AWS. Cheap to clone; queues are made once per name, so each resolves its URL once.
#[derive(Clone)]
pub struct AwsBackend {
    clients: AwsClients,
    config: Arc<Config>,
    ports: Ports,
    queues: SqsQueues,
}

/// SQS queues by name, each made once so that it resolves its URL once.
#[derive(Clone)]
struct SqsQueues {
    sqs: aws_sdk_sqs::Client,
    cache: Arc<Mutex<HashMap<String, Arc<SqsQueue>>>>,
}

impl SqsQueues {
    fn get(&self, name: &str) -> Arc<SqsQueue> {
        let mut cache = self.cache.lock().expect("queue cache lock");
        cache
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(SqsQueue::new(self.sqs.clone(), name)))
            .clone()
    }
}

impl choreo_ports::QueueLookup for SqsQueues {
    fn queue(&self, name: &str) -> Arc<dyn Queue> {
        self.get(name)
    }
}

impl AwsBackend {
    /// Connects with the SDK's standard chain; `config.aws.endpoint_url` (or `AWS_ENDPOINT_URL`)
    /// points it at an emulator. Nothing is called yet: resources are looked up on first use.
    pub async fn connect(config: &Config) -> AwsBackend {
        let clients = AwsClients::from_env(config.aws.endpoint_url.as_deref()).await;
        Self::with_clients(clients, config)
    }

    pub fn with_clients(clients: AwsClients, config: &Config) -> AwsBackend {
        let aws = &config.aws;
        // As `dynamo::create_tables` makes it.
        clients.calls.keys_only_index(&aws.state_table);
        let queues = SqsQueues {
            sqs: clients.sqs.clone(),
            cache: Arc::default(),
        };
        let ports = Ports {
            bus: Arc::new(SnsBus::new(clients.sns.clone(), &config.topics.events)),
            objects: Arc::new(S3Store::new(clients.s3.clone())),
            state: Arc::new(DynamoStateStore::new(
                clients.dynamodb.clone(),
                &aws.state_table,
                aws.index_shards,
            )),
            crawler: Arc::new(GlueCrawler::new(clients.glue.clone())),
            catalog: Arc::new(GlueCatalog::new(clients.glue.clone(), &aws.glue_database)),
            jobs: Arc::new(GlueJobRunner::new(clients.glue.clone(), &aws.builtin_job)),
            audit: Arc::new(DynamoAuditLog::new(
                clients.dynamodb.clone(),
                &aws.audit_table,
            )),
            queues: Arc::new(queues.clone()),
            notifier: Arc::new(SnsNotifier::new(clients.sns.clone(), &config.topics.alerts)),
            extracts: Arc::new(crate::keys::DynamoExtractStore::new(
                clients.dynamodb.clone(),
                &aws.extract_table,
            )),
        };
        AwsBackend {
            clients,
            config: Arc::new(config.clone()),
            ports,
            queues,
        }
    }

    pub fn ports(&self) -> Ports {
        self.ports.clone()
    }

    pub fn sqs_queue(&self, name: &str) -> Arc<SqsQueue> {
        self.queues.get(name)
    }

    pub fn queue(&self, name: &str) -> Arc<dyn Queue> {
        self.sqs_queue(name)
    }

    /// API calls made so far, by service and operation.
    pub fn calls(&self) -> &CallCounter {
        &self.clients.calls
    }

    pub fn clients(&self) -> &AwsClients {
        &self.clients
    }

    /// Creates every resource the configuration needs (idempotent).
    pub async fn bootstrap(&self) -> Result<crate::bootstrap::Bootstrapped, PortError> {
        crate::bootstrap::bootstrap(&self.clients, &self.config).await
    }
}
