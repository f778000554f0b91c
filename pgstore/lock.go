package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// unlockTimeout bounds the statement that releases the lock. If it
	// does not finish in time the connection is closed, which releases
	// the lock too.
	unlockTimeout = 10 * time.Second

	// closeTimeout bounds the polite close of a connection whose lock
	// state is unknown.
	closeTimeout = 5 * time.Second

	// lockNamespace seeds the advisory-lock number, so that it does not
	// collide with locks that other code takes on small integers.
	lockNamespace = "github.com/gopandadoc/pandadocauth/pgstore lock\x00"
)

// Lock takes the lock of Key, waiting until it is free or ctx ends, and
// returns the function that releases it. It blocks every other Lock of
// the same Key, in this process or another, and no Lock of another Key.
//
// If ctx ends first, Lock returns an error satisfying errors.Is(err,
// ctx.Err()). The lock dies with its connection: if the holder's process
// or connection dies, the lock is released. unlock may be called more
// than once; calls after the first do nothing.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	if s.Pool == nil {
		return nil, errNoPool
	}
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstore: taking the lock: acquiring a connection: %w", err)
	}
	id := lockID(s.Key)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, id); err != nil {
		// The lock may have been granted just as the wait was cut short:
		// closing the session releases it in any case. (pgx has closed
		// the connection already, and cancelled the statement, when ctx
		// ended.)
		discard(conn)
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return nil, fmt.Errorf("pgstore: waiting for the lock: %w (%w)", cerr, err)
		}
		return nil, fmt.Errorf("pgstore: waiting for the lock: %w", err)
	}
	s.mu.Lock()
	s.held = conn
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.unlock(conn, id) }) }, nil
}

// unlock releases the lock held on conn and returns conn to the pool.
func (s *Store) unlock(conn *pgxpool.Conn, id int64) {
	// Waits for a Load or Save running on conn.
	s.mu.Lock()
	if s.held == conn {
		s.held = nil
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	var released bool
	err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, id).Scan(&released)
	if err != nil || !released {
		// Whether the session still holds the lock is unknown: close
		// it, which releases every lock it holds.
		discard(conn)
		return
	}
	conn.Release()
}

// discard closes conn and gives it back to the pool, which drops it.
func discard(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	conn.Conn().Close(ctx)
	conn.Release()
}

// ErrLockLost means the connection holding the lock closed while the
// lock was held, for example because PostgreSQL terminated it: the lock
// is gone, another process may hold it now, and Load and Save refuse to
// run until unlock is called, rather than run without the lock.
var ErrLockLost = errors.New("the lock's connection was lost")

// do runs f on the connection holding the lock while this Store holds
// it, else on the pool. While the lock is held, f never runs on the
// pool: it would need a second connection (a pool of one would wait for
// ever), and it would run without the lock. If the lock's connection is
// dead, do fails with ErrLockLost.
func (s *Store) do(f func(querier) error) error {
	s.mu.Lock()
	held := s.held
	if held == nil {
		s.mu.Unlock()
		return f(s.Pool)
	}
	defer s.mu.Unlock()
	if held.Conn().IsClosed() {
		return ErrLockLost
	}
	err := f(held)
	if err != nil && held.Conn().IsClosed() {
		return fmt.Errorf("%w: %w", ErrLockLost, err)
	}
	return err
}

// lockID is the advisory-lock number of key: the first 8 bytes of a
// SHA-256, so that distinct keys practically never share a lock (and if
// they did, they would only wait for each other).
func lockID(key string) int64 {
	sum := sha256.Sum256([]byte(lockNamespace + key))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}
