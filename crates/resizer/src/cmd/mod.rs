pub mod resize;
