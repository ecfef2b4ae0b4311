pub mod admin;
pub mod api;
pub mod dev;
pub mod lab;
pub mod loadtest;
pub mod resize;
pub mod worker;
