package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// pebble layout: one keyspace, prefixes per "table"/index.
//
//	e/<event id>                       -> encoded event record
//	u/<event id>                       -> {} (dedupe)
//	d/<delivery id BE8>                -> encoded delivery record
//	q/<dest>\0<status>\0<next_at BE8><delivery id BE8> -> {} (due index)
var (
	pfxEvent  = []byte("e/")
	pfxDedupe = []byte("u/")
	pfxDeliv  = []byte("d/")
	pfxDue    = []byte("q/")
)

func pkey(prefix []byte, rest ...[]byte) []byte {
	n := len(prefix)
	for _, r := range rest {
		n += len(r)
	}
	b := make([]byte, 0, n)
	b = append(b, prefix...)
	for _, r := range rest {
		b = append(b, r...)
	}
	return b
}

// countingFS wraps pebble's VFS and counts every Sync/SyncData/SyncTo call,
// separately for WAL (*.log) files: this is the real number of fsyncs pebble
// issued on the commit path.
type countingFS struct {
	vfs.FS
	walSyncs atomic.Int64
	allSyncs atomic.Int64
}

type countingFile struct {
	vfs.File
	fs  *countingFS
	wal bool
}

func (f *countingFile) count() {
	f.fs.allSyncs.Add(1)
	if f.wal {
		f.fs.walSyncs.Add(1)
	}
}
func (f *countingFile) Sync() error     { f.count(); return f.File.Sync() }
func (f *countingFile) SyncData() error { f.count(); return f.File.SyncData() }
func (f *countingFile) SyncTo(n int64) (bool, error) {
	full, err := f.File.SyncTo(n)
	if full {
		f.count()
	}
	return full, err
}

func (fs *countingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return &countingFile{File: f, fs: fs, wal: strings.HasSuffix(name, ".log")}, nil
}
func (fs *countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}
func (fs *countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, o...)
	return fs.wrap(name, f, err)
}
func (fs *countingFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, name, c)
	return fs.wrap(name, f, err)
}
func (fs *countingFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	return fs.wrap(name, f, err)
}
func (fs *countingFS) Unwrap() vfs.FS { return fs.FS }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Errorf(f string, a ...any) { fmt.Printf("pebble: "+f+"\n", a...) }
func (quietLogger) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

type pebbleStore struct {
	db      *pebble.DB
	opts    *pebble.Options
	fs      *countingFS
	gw      *groupWriter // nil: per-publisher batches with pebble.Sync
	seq     atomic.Int64
	delivID atomic.Int64
	batches atomic.Int64
}

func openPebble(dir string, writer bool, maxBatch int) (*pebbleStore, error) {
	cfs := &countingFS{FS: vfs.Default}
	opts := &pebble.Options{
		FS:                 cfs,
		CacheSize:          64 << 20,
		MemTableSize:       64 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10) // dedupe lookups are point gets that usually miss
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &pebbleStore{db: db, opts: opts, fs: cfs}
	// Counters would be recovered from the last keys on restart; fresh DB here.
	if writer {
		s.gw = newGroupWriter(maxBatch, s.applyGroup)
	}
	return s, nil
}

func (s *pebbleStore) exists(key []byte) (bool, error) {
	_, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// addEvents stages events into b. seen catches duplicates inside the same
// batch (the DB check only sees committed data). NOTE: with per-publisher
// batches, two publishers racing on the same id could both pass the check;
// a production store would need a per-id lock or the single-writer mode.
func (s *pebbleStore) addEvents(b *pebble.Batch, evs []*Event, seen map[string]struct{}) error {
	for _, e := range evs {
		uk := pkey(pfxDedupe, []byte(e.ID))
		if seen != nil {
			if _, dup := seen[e.ID]; dup {
				continue
			}
		}
		dup, err := s.exists(uk)
		if err != nil {
			return err
		}
		if dup {
			continue
		}
		if seen != nil {
			seen[e.ID] = struct{}{}
		}
		e.Seq = s.seq.Add(1)
		for i := range e.Deliv {
			d := &e.Deliv[i]
			d.ID = s.delivID.Add(1)
			_ = b.Set(pkey(pfxDeliv, be8(nil, d.ID)), encodeDeliv(delivRec{e.ID, d.Dest, d.Status, d.NextAt, 0}), nil)
			_ = b.Set(dueKey(pfxDue, d.Dest, d.Status, d.NextAt, d.ID), nil, nil)
		}
		_ = b.Set(pkey(pfxEvent, []byte(e.ID)), encodeEvent(e), nil)
		_ = b.Set(uk, nil, nil)
	}
	return nil
}

func (s *pebbleStore) addMarks(b *pebble.Batch, ids []int64) error {
	for _, did := range ids {
		k := pkey(pfxDeliv, be8(nil, did))
		v, closer, err := s.db.Get(k)
		if err != nil {
			return fmt.Errorf("delivery %d: %w", did, err)
		}
		rec, err := decodeDeliv(v)
		closer.Close()
		if err != nil {
			return err
		}
		_ = b.Delete(dueKey(pfxDue, rec.Dest, rec.Status, rec.NextAt, did), nil)
		rec.Status = statusDelivered
		rec.Attempts++
		_ = b.Set(k, encodeDeliv(rec), nil)
		_ = b.Set(dueKey(pfxDue, rec.Dest, rec.Status, rec.NextAt, did), nil, nil)
	}
	return nil
}

func (s *pebbleStore) commit(b *pebble.Batch) error {
	s.batches.Add(1)
	return b.Commit(pebble.Sync)
}

func (s *pebbleStore) applyGroup(batch []*request) error {
	b := s.db.NewBatch()
	defer b.Close()
	seen := make(map[string]struct{}, 64)
	for _, r := range batch {
		if err := s.addEvents(b, r.evs, seen); err != nil {
			return err
		}
		if err := s.addMarks(b, r.marks); err != nil {
			return err
		}
	}
	return s.commit(b)
}

func (s *pebbleStore) Append(evs []*Event) error {
	if s.gw != nil {
		return s.gw.submit(evs, nil)
	}
	b := s.db.NewBatch()
	defer b.Close()
	var seen map[string]struct{}
	if len(evs) > 1 {
		seen = make(map[string]struct{}, len(evs))
	}
	if err := s.addEvents(b, evs, seen); err != nil {
		return err
	}
	return s.commit(b)
}

func (s *pebbleStore) MarkDelivered(ids []int64) error {
	if s.gw != nil {
		return s.gw.submit(nil, ids)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.addMarks(b, ids); err != nil {
		return err
	}
	return s.commit(b)
}

// Commits for pebble = WAL fsyncs actually issued (the commit pipeline groups
// concurrent Sync batches onto one fsync; in writer mode it is ~1 per group).
func (s *pebbleStore) Commits() int64 { return s.fs.walSyncs.Load() }
func (s *pebbleStore) Fsyncs() (int64, int64, bool) {
	return s.fs.walSyncs.Load(), s.fs.allSyncs.Load(), true
}

func (s *pebbleStore) Due(dest string, now int64, limit int, bodies bool) (int, error) {
	prefix := dueKeyPrefix(pfxDue, dest, statusPending)
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: prefix,
		UpperBound: be8(bytes.Clone(prefix), now+1),
	})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid && n < limit; valid = it.Next() {
		rest := it.Key()[len(prefix):]
		v, closer, err := s.db.Get(pkey(pfxDeliv, rest[8:16]))
		if err != nil {
			return n, fmt.Errorf("dangling index entry: %w", err)
		}
		rec, err := decodeDeliv(v)
		closer.Close()
		if err != nil {
			return n, err
		}
		if bodies {
			ev, closer, err := s.db.Get(pkey(pfxEvent, []byte(rec.EventID)))
			if err != nil {
				return n, err
			}
			_, err = decodeEventBody(ev)
			closer.Close()
			if err != nil {
				return n, err
			}
		}
		_ = binary.BigEndian.Uint64(rest)
		n++
	}
	return n, it.Error()
}

func (s *pebbleStore) Verify() ([]string, error) {
	info := []string{fmt.Sprintf("DisableWAL=%v WriteOptions=pebble.Sync(Sync=%v) WALMinSyncInterval=%v FormatMajorVersion=%d MemTableSize=%d CacheSize=%d bloom=10bits/key",
		s.opts.DisableWAL, pebble.Sync.Sync, s.opts.WALMinSyncInterval != nil, s.opts.FormatMajorVersion, s.opts.MemTableSize, s.opts.CacheSize)}
	if s.opts.DisableWAL || !pebble.Sync.Sync {
		return info, errors.New("pebble WAL disabled or Sync off")
	}
	return info, nil
}

func (s *pebbleStore) Close() error {
	if s.gw != nil {
		s.gw.close()
	}
	return s.db.Close()
}
