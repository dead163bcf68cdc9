"""The `loyalty` command: an entry point like api/ and jobs/, driving the domain in loyalty/."""
