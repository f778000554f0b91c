package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gopandadoc/pandadocauth"
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

// lockTable records the connections holding the locks a Store or Keyed
// holds, one per key, so that Load and Save of a locked key run on its
// lock's connection. The zero value is ready to use.
type lockTable struct {
	mu   sync.Mutex         // guards held
	held map[string]*holder // the locked keys; an entry lives from Lock to unlock
}

// holder is the connection holding one key's lock.
type holder struct {
	mu   sync.Mutex    // guards conn; held while a Load or Save runs on it
	conn *pgxpool.Conn // nil once unlocked
}

// get returns the holder of key's lock, or nil.
func (lt *lockTable) get(key string) *holder {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.held[key]
}

func (r rows) lock(ctx context.Context, key string) (unlock func(), err error) {
	if r.pool == nil {
		return nil, r.errNoPool()
	}
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstore: taking the lock: acquiring a connection: %w", err)
	}
	// The session is idle while the lock is held (the token endpoint is
	// called meanwhile), and an idle_session_timeout set for the role or
	// the database would end it, and the lock with it: another process
	// would take the lock and refresh too.
	if _, err := conn.Exec(ctx, disableIdleTimeoutsSQL); err != nil {
		discard(conn)
		return nil, fmt.Errorf("pgstore: taking the lock: %w", err)
	}
	id := lockID(key)
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
	h := &holder{conn: conn}
	lt := r.locks
	lt.mu.Lock()
	if lt.held == nil {
		lt.held = make(map[string]*holder)
	}
	// Any holder of key still recorded has been unlocked: the database
	// granted the lock to this connection.
	lt.held[key] = h
	lt.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { lt.unlock(key, h, id) }) }, nil
}

// unlock releases the lock h holds on key and returns its connection to
// the pool.
func (lt *lockTable) unlock(key string, h *holder, id int64) {
	lt.mu.Lock()
	if lt.held[key] == h {
		delete(lt.held, key)
	}
	lt.mu.Unlock()
	// Waits for a Load or Save running on the connection.
	h.mu.Lock()
	conn := h.conn
	h.conn = nil
	h.mu.Unlock()
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
	// Back in the pool, the connection is subject to the timeouts again.
	if _, err := conn.Exec(ctx, restoreIdleTimeoutsSQL); err != nil {
		discard(conn)
		return
	}
	conn.Release()
}

// The statements that turn off, on the lock's session, the timeouts that
// end an idle session (idle_session_timeout, PostgreSQL 14 and later;
// idle_in_transaction_session_timeout, 9.6), and restore them when it
// goes back to the pool: to their values at the session's start (the
// role's, the database's, the server's or the connection string's).
// Reading the names from pg_settings sets only those the server has.
const (
	disableIdleTimeoutsSQL = `SELECT count(set_config(name, '0', false)) FROM pg_settings
	WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')`
	restoreIdleTimeoutsSQL = `SELECT count(set_config(name, reset_val, false)) FROM pg_settings
	WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')`
)

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
// run until unlock is called, rather than run without the lock. It wraps
// pandadocauth.ErrLockLost, which the TokenSource answers by taking the
// lock again before it writes.
var ErrLockLost = fmt.Errorf("the lock's connection was closed: %w", pandadocauth.ErrLockLost)

// do runs f on the connection holding key's lock while it is held
// here, else on the pool. While the lock is held, f never runs on the
// pool: it would need a second connection (a pool of one would wait for
// ever), and it would run without the lock. If the lock's connection is
// dead, do fails with ErrLockLost; a write whose statement was sent
// before the connection closed fails with errWriteUnknown instead. Keys wait only for their own lock's
// connection: a Load of one key never waits for a Save of another.
func (r rows) do(key string, write bool, f func(querier) error) error {
	h := r.locks.get(key)
	if h == nil {
		return f(r.pool)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		// Unlocked meanwhile.
		return f(r.pool)
	}
	if h.conn.Conn().IsClosed() {
		return ErrLockLost
	}
	if write {
		// A ping first, which writes nothing: a session that ended while
		// idle (the usual lost lock) is found before the write is sent,
		// and the write is fenced, not of unknown outcome.
		pctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		perr := h.conn.Ping(pctx)
		cancel()
		if perr != nil && h.conn.Conn().IsClosed() {
			return fmt.Errorf("%w: %w", ErrLockLost, perr)
		}
	}
	err := f(h.conn)
	if err != nil && h.conn.Conn().IsClosed() {
		if write && !pgconn.SafeToRetry(err) {
			// The statement may have reached PostgreSQL and committed
			// before the connection closed: that is no fenced write, so
			// it must not be reported as one (see
			// pandadocauth.ErrLockLost).
			return fmt.Errorf("%w: %w", errWriteUnknown, err)
		}
		return fmt.Errorf("%w: %w", ErrLockLost, err)
	}
	return err
}

// errWriteUnknown is the error of a write under the lock whose
// connection closed after the statement was sent: whether it was stored
// is unknown. It does not wrap ErrLockLost, which promises that nothing
// was stored; the next write under the lock finds the connection closed
// and fails with ErrLockLost before it runs.
var errWriteUnknown = errors.New("the lock's connection closed during the write; whether it was stored is unknown")

// lockID is the advisory-lock number of key: the first 8 bytes of a
// SHA-256, so that distinct keys practically never share a lock (and if
// they did, they would only wait for each other).
func lockID(key string) int64 {
	sum := sha256.Sum256([]byte(lockNamespace + key))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}
