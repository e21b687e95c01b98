//! PID-1 duties: become child subreaper, own every `waitpid` call (one reaper hands each
//! exit to the service that owns the pid), and turn signals into supervisor events
//! (shutdown, reload, forward).
