package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadDebounce is how long the config file must stay quiet before a change reloads it. One save is a burst
// of events (truncate, write, chmod; or create, write, rename; a ConfigMap swap is five or more), and a
// reload between two of them would read a half-written file or reload twice.
const reloadDebounce = 200 * time.Millisecond

// watchConfig calls reload on SIGHUP and when the config file changes on disk, until ctx ends (then it
// returns nil). It returns an error only when watching cannot start; watcher errors later are logged and
// watching goes on. reload is called from this goroutine, one call at a time, with the reason ("SIGHUP" or
// "file changed").
//
// It watches the file's directory, not the file: an inotify watch on the file follows the inode, so it goes
// deaf when the file is replaced by a rename (editors saving atomically, `mv new sluice.yaml`) or when a
// Kubernetes ConfigMap swaps its `..data` symlink. When the file is a symlink, the directory of its resolved
// target is watched as well (edits made there are changes too), and a change of the resolved target counts
// as a change of the file.
func watchConfig(ctx context.Context, file string, log *slog.Logger, reload func(reason string)) error {
	w, err := newConfigWatcher(file, log)
	if err != nil {
		return err
	}
	return w.run(ctx, reload)
}

// configWatcher is watchConfig's state. It is set up (SIGHUP subscribed, directory watched) by
// newConfigWatcher before run starts, so a caller knows no signal or change is missed after that point.
type configWatcher struct {
	file    string // absolute, cleaned path of the config file as given
	dir     string // its directory, always watched
	realDir string // dir with its symlinks resolved, to tell whether the target lives elsewhere
	target  string // the file with its symlinks resolved ("" while it does not resolve)
	extra   string // the target's directory when it is not dir (watched too), else ""
	log     *slog.Logger
	fsw     *fsnotify.Watcher
	hup     chan os.Signal
}

// newConfigWatcher subscribes to SIGHUP and starts watching file's directory. The caller must call run,
// which releases both.
func newConfigWatcher(file string, log *slog.Logger) (*configWatcher, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("config watcher: %w", err)
	}
	w := &configWatcher{file: filepath.Clean(abs), log: log}
	w.dir = filepath.Dir(w.file)
	w.realDir = w.dir
	if d, err := filepath.EvalSymlinks(w.dir); err == nil {
		w.realDir = d
	}
	if w.fsw, err = fsnotify.NewWatcher(); err != nil {
		return nil, fmt.Errorf("config watcher: %w", err)
	}
	if err := w.fsw.Add(w.dir); err != nil {
		_ = w.fsw.Close()
		return nil, fmt.Errorf("config watcher: watch %s: %w (reload with SIGHUP or a restart)", w.dir, err)
	}
	w.retarget()
	// Buffered so a SIGHUP arriving during a reload is kept; more arriving then coalesce into one, which is
	// what they ask for anyway (the file is read afresh).
	w.hup = make(chan os.Signal, 1)
	signal.Notify(w.hup, syscall.SIGHUP)
	return w, nil
}

// retarget resolves the file's symlinks again and moves the extra watch to the target's directory. It
// reports whether the resolved target changed.
func (w *configWatcher) retarget() bool {
	target, err := filepath.EvalSymlinks(w.file)
	if err != nil {
		// Gone (mid-replace, or deleted): keep the old target so that its return counts as a change.
		return false
	}
	target = filepath.Clean(target)
	if target == w.target {
		return false
	}
	w.target = target
	extra := filepath.Dir(target)
	if extra == w.realDir {
		// Same directory (no symlink, or one to a sibling): watching it again under another name would
		// confuse the backend, which keys watches by inode.
		extra = ""
	}
	if extra != w.extra {
		if w.extra != "" {
			// Fails harmlessly when the old directory is already gone (a ConfigMap swap deletes it).
			_ = w.fsw.Remove(w.extra)
		}
		w.extra = ""
		if extra != "" {
			if err := w.fsw.Add(extra); err != nil {
				w.log.Warn("config watcher: cannot watch the config's symlink target; edits there need SIGHUP",
					"file", w.file, "target", target, "err", err)
			} else {
				w.extra = extra
			}
		}
	}
	return true
}

// concerns reports whether ev may have changed the config file's content.
func (w *configWatcher) concerns(ev fsnotify.Event) bool {
	// A permission change alone changes nothing the loader reads.
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Clean(ev.Name)
	// Re-resolve on every event, not only on the file's own name: a ConfigMap update renames `..data`, never
	// touching `sluice.yaml`, and the only sign is that the link now leads elsewhere.
	changed := w.retarget()
	return changed || name == w.file || name == w.target
}

// run loops until ctx ends, then unsubscribes from SIGHUP and stops watching.
func (w *configWatcher) run(ctx context.Context, reload func(reason string)) error {
	defer func() {
		signal.Stop(w.hup)
		_ = w.fsw.Close()
	}()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.hup:
			// The reload reads the file as it is now, so a change still waiting out its debounce is covered.
			debounce.Stop()
			reload("SIGHUP")
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("config watcher: the file watcher closed; reload with SIGHUP")
			}
			if filepath.Clean(ev.Name) == w.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				w.log.Warn("config watcher: the config directory was removed or renamed; file changes are no longer seen, SIGHUP still reloads",
					"dir", w.dir)
				continue
			}
			// Deliberately no logging of events that do not concern the file: the log itself may be written to
			// this directory, and logging its writes would feed on itself.
			if w.concerns(ev) {
				debounce.Reset(reloadDebounce)
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("config watcher: the file watcher closed; reload with SIGHUP")
			}
			// Typically an overflowed event queue: the change may have been in what was lost, so look again.
			w.log.Warn("config watcher error; checking the file anyway", "file", w.file, "err", err)
			debounce.Reset(reloadDebounce)
		case <-debounce.C:
			if _, err := os.Stat(w.file); errors.Is(err, fs.ErrNotExist) {
				// Removed and not (yet) replaced: reloading would only log a refusal. Its return is a change too.
				w.log.Warn("config file removed; the running config stays until it is back", "file", w.file)
				continue
			}
			reload("file changed")
		}
	}
}
