pub mod admin;
pub mod dev;
pub mod loadtest;
pub mod resize;
