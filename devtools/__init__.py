"""Developer tooling: embedded servers, tool installs, the simulator, the mail catcher."""
