package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// reloadSettle is how long a "nothing more happened" check waits: several debounce periods.
const reloadSettle = 5 * reloadDebounce

// watched runs the config watcher on file until the test ends and returns the channel of reload reasons.
// The watcher is set up (SIGHUP subscribed, directory watched) when it returns, so the test's changes after
// that cannot be missed.
func watched(t *testing.T, file string) <-chan string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	w, err := newConfigWatcher(file, log)
	if err != nil {
		t.Fatal(err)
	}
	reasons := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, func(reason string) { reasons <- reason }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watchConfig returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("watchConfig did not return after its context ended")
		}
	})
	return reasons
}

// nextReload waits (generously) for the next reload and returns its reason.
func nextReload(t *testing.T, reasons <-chan string, after string) string {
	t.Helper()
	select {
	case r := <-reasons:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("no reload after %s", after)
		return ""
	}
}

// noMoreReloads checks that nothing else reloads within a settle period.
func noMoreReloads(t *testing.T, reasons <-chan string, after string) {
	t.Helper()
	select {
	case r := <-reasons:
		t.Fatalf("unexpected extra reload (%q) after %s", r, after)
	case <-time.After(reloadSettle):
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestWatchConfigWriteReloadsOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	writeFile(t, file, "a: 1\n")
	reasons := watched(t, file)
	// A save in place is a truncate and a write (two events); the debounce makes it one reload.
	writeFile(t, file, "a: 2\n")
	if r := nextReload(t, reasons, "a write"); r != "file changed" {
		t.Fatalf("reason %q, want %q", r, "file changed")
	}
	noMoreReloads(t, reasons, "one write")
}

func TestWatchConfigRenameReplace(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	writeFile(t, file, "a: 1\n")
	reasons := watched(t, file)
	// What editors and `mv` do: the new content arrives as a new inode, which a watch on the file itself
	// would never see.
	writeFile(t, file+".tmp", "a: 2\n")
	if err := os.Rename(file+".tmp", file); err != nil {
		t.Fatal(err)
	}
	nextReload(t, reasons, "a rename over the file")
	// And the watcher keeps working on the new inode.
	writeFile(t, file, "a: 3\n")
	nextReload(t, reasons, "a write after the rename")
}

func TestWatchConfigRelativePath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "sluice.yaml"), "a: 1\n")
	t.Chdir(dir)
	reasons := watched(t, "sluice.yaml")
	writeFile(t, filepath.Join(dir, "sluice.yaml"), "a: 2\n")
	nextReload(t, reasons, "a write to a config given by a relative path")
}

// TestWatchConfigConfigMapSwap reproduces how the kubelet updates a mounted ConfigMap: the file is a symlink
// through `..data`, itself a symlink to a timestamped directory; an update writes a new directory, points a
// temporary link at it, renames that over `..data` and deletes the old directory. `sluice.yaml` itself is
// never touched.
func TestWatchConfigConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	mkVersion := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "sluice.yaml"), content)
	}
	mkVersion("..2024_01_01_00_00_00.1", "a: 1\n")
	if err := os.Symlink("..2024_01_01_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.Symlink(filepath.Join("..data", "sluice.yaml"), file); err != nil {
		t.Fatal(err)
	}
	reasons := watched(t, file)

	swap := func(from, to, content string) {
		mkVersion(to, content)
		if err := os.Symlink(to, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, from)); err != nil {
			t.Fatal(err)
		}
	}
	swap("..2024_01_01_00_00_00.1", "..2024_01_01_00_01_00.2", "a: 2\n")
	nextReload(t, reasons, "a ConfigMap swap")
	// A second update works as well: the watcher followed the new target.
	swap("..2024_01_01_00_01_00.2", "..2024_01_01_00_02_00.3", "a: 3\n")
	nextReload(t, reasons, "a second ConfigMap swap")
	if b, err := os.ReadFile(file); err != nil || string(b) != "a: 3\n" {
		t.Fatalf("test setup: config reads %q, %v", b, err)
	}
}

// TestWatchConfigSymlinkTargetEdited: sluice.yaml links to a file in another directory, edited in place.
func TestWatchConfigSymlinkTargetEdited(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	real := filepath.Join(other, "real.yaml")
	writeFile(t, real, "a: 1\n")
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.Symlink(real, file); err != nil {
		t.Fatal(err)
	}
	reasons := watched(t, file)
	writeFile(t, real, "a: 2\n")
	nextReload(t, reasons, "an edit of the symlink's target")
	// Pointing the link elsewhere is a change too.
	real2 := filepath.Join(other, "real2.yaml")
	writeFile(t, real2, "a: 3\n")
	noMoreReloads(t, reasons, "writing a file the link does not point to")
	if err := os.Symlink(real2, file+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file+".new", file); err != nil {
		t.Fatal(err)
	}
	nextReload(t, reasons, "re-pointing the symlink")
}

func TestWatchConfigSIGHUP(t *testing.T) {
	// Belt and braces: should the watcher's subscription be gone by the time the signal lands, the test
	// process must not die of it.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	writeFile(t, file, "a: 1\n")
	reasons := watched(t, file) // SIGHUP is subscribed once this returns
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if r := nextReload(t, reasons, "SIGHUP"); r != "SIGHUP" {
		t.Fatalf("reason %q, want SIGHUP", r)
	}
	noMoreReloads(t, reasons, "one SIGHUP")
}

func TestWatchConfigIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	writeFile(t, file, "a: 1\n")
	reasons := watched(t, file)
	// The neighbours a config directory really has: a log being written, an editor's swap file, a backup.
	writeFile(t, filepath.Join(dir, "sluice.log"), "line\n")
	writeFile(t, filepath.Join(dir, ".sluice.yaml.swp"), "x")
	writeFile(t, filepath.Join(dir, "other.yaml"), "b: 1\n")
	if err := os.Rename(filepath.Join(dir, "other.yaml"), filepath.Join(dir, "other.yaml.bak")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	noMoreReloads(t, reasons, "changes to other files and a chmod of the config")
}

func TestWatchConfigRemovedThenRestored(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	writeFile(t, file, "a: 1\n")
	reasons := watched(t, file)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	// A missing file is not reloaded (it would only be refused); its return is.
	noMoreReloads(t, reasons, "removing the config")
	writeFile(t, file, "a: 2\n")
	nextReload(t, reasons, "restoring the config")
}

func TestWatchConfigMissingDirectory(t *testing.T) {
	err := watchConfig(context.Background(), filepath.Join(t.TempDir(), "nope", "sluice.yaml"),
		slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) { t.Error("reload called") })
	if err == nil {
		t.Fatal("watchConfig on a missing directory returned nil, want an error")
	}
}
