//! The api service over real HTTP, against real PostgreSQL and Redis.
mod auth;
mod bad_input;
mod cache;
mod fairness;
mod helpers;
mod kinds;
mod lifecycle;
mod tasks;
mod web;
mod webhook_secrets;
