package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bbolt layout: one bucket per "table"/index.
//
//	events     : event id (UUIDv7 string)          -> encoded event record
//	dedupe     : event id                          -> {} (exists)
//	deliveries : delivery id (8 bytes BE)          -> encoded delivery record
//	due        : dest\0status\0next_at(BE8)id(BE8) -> {} (secondary index)
var (
	bkEvents = []byte("events")
	bkDedupe = []byte("dedupe")
	bkDeliv  = []byte("deliveries")
	bkDue    = []byte("due")
	empty    = []byte{}
)

type boltStore struct {
	db       *bolt.DB
	useBatch bool
	gw       *groupWriter
	startTx  int
}

type boltOpts struct {
	batchDelay time.Duration
	batchSize  int
}

func openBolt(dir string, useBatch bool, maxBatch int, bo boltOpts) (*boltStore, error) {
	db, err := bolt.Open(filepath.Join(dir, "sluice.bolt"), 0o600, &bolt.Options{
		Timeout:         time.Second,
		NoSync:          false, // fdatasync on every commit
		NoGrowSync:      false,
		NoFreelistSync:  true, // as etcd does: freelist rebuilt on open, fewer pages written per commit
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // avoid remaps (which block writers) while the file grows
	})
	if err != nil {
		return nil, err
	}
	if bo.batchDelay > 0 {
		db.MaxBatchDelay = bo.batchDelay
	}
	if bo.batchSize > 0 {
		db.MaxBatchSize = bo.batchSize
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bkEvents, bkDedupe, bkDeliv, bkDue} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s := &boltStore{db: db, useBatch: useBatch}
	s.startTx = s.txid()
	if !useBatch {
		s.gw = newGroupWriter(maxBatch, func(batch []*request) error {
			return db.Update(func(tx *bolt.Tx) error {
				if os.Getenv("SE_DEBUG") != "" {
					t0 := time.Now()
					tx.OnCommit(func() {
						if d := time.Since(t0); d > 50*time.Millisecond {
							st := tx.Stats()
							fmt.Fprintf(os.Stderr, "slow bbolt commit %s reqs=%d pages=%d writes=%d writeTime=%s spill=%s rebalance=%s\n", d, len(batch), st.GetPageCount(), st.GetWrite(), st.GetWriteTime(), st.GetSpillTime(), st.GetRebalanceTime())
						}
					})
				}
				for _, r := range batch {
					if err := s.applyTx(tx, r.evs, r.marks); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
	return s, nil
}

func (s *boltStore) txid() int {
	var id int
	_ = s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

func (s *boltStore) applyTx(tx *bolt.Tx, evs []*Event, marks []int64) error {
	ev, dd, dl, due := tx.Bucket(bkEvents), tx.Bucket(bkDedupe), tx.Bucket(bkDeliv), tx.Bucket(bkDue)
	// Keys are (nearly) ascending in these buckets: pack pages fuller.
	ev.FillPercent, dd.FillPercent, dl.FillPercent = 0.9, 0.9, 0.9
	for _, e := range evs {
		id := []byte(e.ID)
		if dd.Get(id) != nil {
			continue // duplicate
		}
		seq, err := ev.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = int64(seq)
		for i := range e.Deliv {
			d := &e.Deliv[i]
			did, err := dl.NextSequence()
			if err != nil {
				return err
			}
			d.ID = int64(did)
			if err := dl.Put(be8(nil, d.ID), encodeDeliv(delivRec{e.ID, d.Dest, d.Status, d.NextAt, 0})); err != nil {
				return err
			}
			if err := due.Put(dueKey(nil, d.Dest, d.Status, d.NextAt, d.ID), empty); err != nil {
				return err
			}
		}
		if err := ev.Put(id, encodeEvent(e)); err != nil {
			return err
		}
		if err := dd.Put(id, empty); err != nil {
			return err
		}
	}
	for _, did := range marks {
		k := be8(nil, did)
		v := dl.Get(k)
		if v == nil {
			return fmt.Errorf("delivery %d not found", did)
		}
		rec, err := decodeDeliv(v)
		if err != nil {
			return err
		}
		if err := due.Delete(dueKey(nil, rec.Dest, rec.Status, rec.NextAt, did)); err != nil {
			return err
		}
		rec.Status = statusDelivered
		rec.Attempts++
		if err := dl.Put(k, encodeDeliv(rec)); err != nil {
			return err
		}
		if err := due.Put(dueKey(nil, rec.Dest, rec.Status, rec.NextAt, did), empty); err != nil {
			return err
		}
	}
	return nil
}

func (s *boltStore) Append(evs []*Event) error {
	if s.useBatch {
		return s.db.Batch(func(tx *bolt.Tx) error { return s.applyTx(tx, evs, nil) })
	}
	return s.gw.submit(evs, nil)
}

func (s *boltStore) MarkDelivered(ids []int64) error {
	if s.useBatch {
		return s.db.Batch(func(tx *bolt.Tx) error { return s.applyTx(tx, nil, ids) })
	}
	return s.gw.submit(nil, ids)
}

// Commits counts committed read-write transactions exactly (meta txid delta).
// Each bbolt commit does 2 fdatasync calls (data pages, then meta page).
func (s *boltStore) Commits() int64               { return int64(s.txid() - s.startTx) }
func (s *boltStore) Fsyncs() (int64, int64, bool) { return 0, 0, false }

func (s *boltStore) Due(dest string, now int64, limit int, bodies bool) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		ev, dl := tx.Bucket(bkEvents), tx.Bucket(bkDeliv)
		prefix := dueKeyPrefix(nil, dest, statusPending)
		c := tx.Bucket(bkDue).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < limit; k, _ = c.Next() {
			rest := k[len(prefix):]
			if int64(binary.BigEndian.Uint64(rest)) > now {
				break
			}
			v := dl.Get(rest[8:16])
			if v == nil {
				return errors.New("dangling index entry")
			}
			rec, err := decodeDeliv(v)
			if err != nil {
				return err
			}
			if bodies {
				if _, err := decodeEventBody(ev.Get([]byte(rec.EventID))); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	return n, err
}

func (s *boltStore) Verify() ([]string, error) {
	info := []string{fmt.Sprintf("NoSync=%v NoGrowSync=%v NoFreelistSync=%v FreelistType=%s MaxBatchSize=%d MaxBatchDelay=%s AllocSize=%d",
		s.db.NoSync, s.db.NoGrowSync, s.db.NoFreelistSync, s.db.FreelistType, s.db.MaxBatchSize, s.db.MaxBatchDelay, s.db.AllocSize)}
	if s.db.NoSync {
		return info, errors.New("bbolt NoSync is on")
	}
	return info, nil
}

func (s *boltStore) Close() error {
	if s.gw != nil {
		s.gw.close()
	}
	return s.db.Close()
}
