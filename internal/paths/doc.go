// Package paths owns the agent's default locations on every OS: the
// socket or named pipe, the config file, the data directory, the import
// directory and the cache file inside it. Package ipc (the client's and
// the listener's default socket), the installer (what it creates and what
// the service runs with), the daemon (`run`), `doctor`, `fingerprint` and
// the agent read them from here and spell none of them out.
//
// [For] is a pure table over GOOS so that the installer can render any
// OS's plan (golden tests, --dry-run) from one machine; [System] and
// [User] apply it to the running OS with its environment, which the
// per-OS files env_unix.go and env_windows.go gather.
//
//	             system                                         per user
//	linux        /etc/keygen-agent/agent.toml                   $XDG_CONFIG_HOME/keygen-agent/agent.toml
//	             /var/lib/keygen-agent                          $XDG_STATE_HOME/keygen-agent
//	             /run/keygen-agent/agent.sock                   $XDG_RUNTIME_DIR/keygen-agent/agent.sock, else /tmp/keygen-agent-UID/agent.sock
//	darwin       /Library/Application Support/keygen-agent/{agent.toml,data}
//	             /var/run/keygen-agent/agent.sock               ~/Library/Application Support/keygen-agent/{agent.toml,data,agent.sock}
//	                                                            (socket in /tmp/keygen-agent-UID when that is too long)
//	windows      %ProgramData%\keygen-agent\{agent.toml,data}   %LOCALAPPDATA%\keygen-agent\{agent.toml,data}
//	             \\.\pipe\keygen-agent                          \\.\pipe\keygen-agent-<user SID>
//	other unix   /usr/local/etc/keygen-agent/agent.toml         as linux
//	(BSDs)       /var/db/keygen-agent
//	             /var/run/keygen-agent/agent.sock
//
// The cache is [CacheName] and queued imports go to [ImportDirName], both
// inside the data directory.
package paths
