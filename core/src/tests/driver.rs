//! `Driver` over the scripted network stack.
