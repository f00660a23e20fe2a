//! End-to-end tests: the six services on the local backend, in-process or as the `choreo` binary.
//! One test binary with a module per area, sharing the helpers.

mod aws;
mod bad_input;
mod bench;
mod catalog;
mod cli;
mod compose;
mod corpus;
mod crash;
mod dashboard;
mod demo;
mod dlq;
mod duplicates;
mod extracts;
mod failures;
mod fault_proxy;
mod faults;
mod glue;
mod helpers;
mod http;
mod intake;
mod metrics;
mod operations;
mod operator_api;
mod replicas;
mod stack;
mod stranded;
mod surface;
mod traces;
mod transform;
mod versions;
mod webdriver;
