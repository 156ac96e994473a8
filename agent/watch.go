package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watching: fsnotify loses a watch on a *file* when an editor saves by
// renaming over it, so the agent watches the config file's directory and
// the import directory, filters by name, debounces, and rescans the import
// directory now and then as a safety net.
const (
	debounce     = 300 * time.Millisecond
	rescanPeriod = 60 * time.Second
)

func (a *Agent) startWatchers(ctx context.Context) {
	defer close(a.watching)
	cfg := a.config()
	if a.deps.NoWatch || (a.deps.ConfigFile == "" && cfg.ImportDir == "") {
		return
	}
	if cfg.ImportDir != "" {
		if err := os.MkdirAll(cfg.ImportDir, 0o700); err != nil {
			a.log.Warn("cannot create import directory", "dir", cfg.ImportDir, "err", err)
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("file watching unavailable; config reload and import need a restart", "err", err)
		return
	}
	var cfgDir, cfgName string
	if a.deps.ConfigFile != "" {
		cfgDir, cfgName = filepath.Dir(a.deps.ConfigFile), filepath.Base(a.deps.ConfigFile)
		if err := w.Add(cfgDir); err != nil {
			a.log.Warn("cannot watch config directory", "dir", cfgDir, "err", err)
		}
	}
	if cfg.ImportDir != "" {
		if err := w.Add(cfg.ImportDir); err != nil {
			a.log.Warn("cannot watch import directory", "dir", cfg.ImportDir, "err", err)
		}
	}
	lastCfg := fileStamp(a.deps.ConfigFile)
	a.goOwned(func() {
		defer w.Close()
		// The first scan runs here, off the start path: whatever lies in
		// the import folder, the agent starts and stops.
		if cfg.ImportDir != "" {
			a.scanImports()
		}
		var cfgTimer, importTimer <-chan time.Time
		rescan := time.NewTicker(rescanPeriod)
		defer rescan.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				dir, name := filepath.Dir(ev.Name), filepath.Base(ev.Name)
				switch {
				case cfgName != "" && dir == cfgDir && name == cfgName:
					cfgTimer = time.After(debounce)
				case cfg.ImportDir != "" && dir == filepath.Clean(cfg.ImportDir) && importable(name):
					importTimer = time.After(debounce)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				a.log.Warn("file watcher", "err", err)
			case <-cfgTimer:
				cfgTimer = nil
				lastCfg = fileStamp(a.deps.ConfigFile)
				a.Reload()
			case <-importTimer:
				importTimer = nil
				a.scanImports()
			case <-rescan.C:
				// Safety net for missed events: reload a config file whose
				// size or mtime changed.
				if st := fileStamp(a.deps.ConfigFile); st != lastCfg {
					lastCfg = st
					a.Reload()
				}
				if cfg.ImportDir != "" {
					// Re-add in case the directory was removed and recreated.
					_ = w.Add(cfg.ImportDir)
					a.scanImports()
				}
			}
		}
	})
}

// importable filters editor and download temporaries.
func importable(name string) bool {
	if !strings.HasSuffix(strings.ToLower(name), ".lic") {
		return false
	}
	return !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "~")
}

// scanImports imports every .lic file in the import directory. A verified
// file is moved to processed/, a rejected one to rejected/ with a
// <name>.reason file next to it.
func (a *Agent) scanImports() {
	dir := a.config().ImportDir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() || !importable(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := readImport(path)
		if errors.Is(err, errNotImportable) {
			a.log.Warn("import rejected", "file", e.Name(), "err", err)
			a.moveImport(path, "rejected", err.Error())
			continue
		}
		if err != nil {
			continue
		}
		if err := a.importCertificate(data); err != nil {
			a.log.Warn("import rejected", "file", e.Name(), "err", err)
			a.moveImport(path, "rejected", err.Error())
			continue
		}
		a.log.Info("imported", "file", e.Name())
		a.moveImport(path, "processed", "")
	}
}

// MaxImportSize bounds an import file: certificates are kilobytes.
const MaxImportSize = 16 << 20

// errNotImportable: a file in the import folder that is not a regular file
// (a FIFO, a device, a symlink) or is larger than MaxImportSize.
var errNotImportable = errors.New("not importable")

// readImport reads a regular file of at most MaxImportSize bytes. It never
// follows a symlink and never blocks on a FIFO or device (openImport opens
// without following and without blocking, then checks the opened file).
func readImport(path string) ([]byte, error) {
	f, err := openImport(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", errNotImportable, filepath.Base(path), fi.Mode().Type())
	}
	if fi.Size() > MaxImportSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, over the %d-byte limit", errNotImportable, filepath.Base(path), fi.Size(), MaxImportSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxImportSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxImportSize {
		return nil, fmt.Errorf("%w: %s grew over the %d-byte limit while read", errNotImportable, filepath.Base(path), MaxImportSize)
	}
	return data, nil
}

func (a *Agent) moveImport(path, sub, reason string) {
	dst := filepath.Join(filepath.Dir(path), sub)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		a.log.Warn("import", "err", err)
		return
	}
	target := filepath.Join(dst, a.now().UTC().Format("20060102T150405Z")+"-"+filepath.Base(path))
	if err := os.Rename(path, target); err != nil {
		a.log.Warn("import: moving file", "err", err)
		return
	}
	if reason != "" {
		_ = os.WriteFile(target+".reason", []byte(reason+"\n"), 0o600)
	}
}

// Reload re-reads the configuration. An invalid edit is logged and the old
// configuration kept. Safe settings apply at once; a new license key
// re-activates; settings that need a restart are logged as such.
func (a *Agent) Reload() {
	if a.deps.ConfigLoad == nil {
		return
	}
	nc, warnings, err := a.deps.ConfigLoad()
	for _, w := range warnings {
		a.log.Warn("config", "warning", w)
	}
	if err != nil {
		a.log.Error("config reload rejected; keeping the previous configuration", "err", err)
		return
	}
	a.cfgMu.Lock()
	old := a.cfg
	// Settings that need a restart keep their running values.
	keep := restartOnlyChanges(old, &nc)
	a.cfg = nc
	a.cfgMu.Unlock()
	if len(keep) > 0 {
		a.log.Warn("config changes that need a restart were not applied", "keys", strings.Join(keep, ","))
	}
	if clientChanges(old, nc) && nc.LicenseKey == old.LicenseKey {
		// A new token, environment or API version: rebuild the client and
		// sync at once (an agent backing off after a refusal retries now).
		a.rebuildClient()
		a.goOwned(func() {
			if err := a.requestSync(a.ctx()); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Warn("sync after config change", "err", err)
			}
		})
	}
	if a.deps.LogLevel != nil {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(nc.LogLevel)); err == nil {
			a.deps.LogLevel.Set(lvl)
		}
	}
	a.log.Info("configuration reloaded")
	if nc.LicenseKey != old.LicenseKey && nc.LicenseKey != "" {
		a.log.Info("license key changed in the config; re-activating", "key", RedactKey(nc.LicenseKey))
		if err := a.setLicenseKey(nc.LicenseKey); err != nil {
			a.log.Error("switching license key", "err", err)
			return
		}
		a.goOwned(func() {
			if err := a.requestSync(a.ctx()); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Warn("sync after config change", "err", err)
			}
		})
	}
}

// fileStamp identifies a file's content version cheaply; "" if absent.
func fileStamp(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
}
