package redisstore

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// lossyProxy is a TCP proxy to the test Redis that loses replies: while
// drops is positive, the reply to a command naming key, sent once key
// exists on the server, is not passed on, and its connection is closed
// instead, as when a network fails between a command's execution and its
// reply. The client's retry then runs on a new connection.
type lossyProxy struct {
	t       *testing.T
	ln      net.Listener
	up      *redis.Options // the server
	admin   *redis.Client  // looks at the server directly
	key     string
	drops   atomic.Int32 // replies still to lose
	dropped atomic.Int32 // replies lost

	mu    sync.Mutex // guards conns
	conns []net.Conn
	wg    sync.WaitGroup
}

// newLossyProxy starts a proxy losing drops replies to commands naming
// key, and returns a client that goes through it.
func newLossyProxy(t *testing.T, key string, drops int32, maxRetries int) (*lossyProxy, *redis.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{t: t, ln: ln, up: testOptions(t), admin: testClient(t), key: key}
	p.drops.Store(drops)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), Password: p.up.Password,
		MaxRetries: maxRetries, MaintNotificationsConfig: noMaint})
	t.Cleanup(func() { rdb.Close() })
	return p, rdb
}

func (p *lossyProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial(p.up.Network, p.up.Addr)
		if err != nil {
			p.t.Errorf("proxy: dialing Redis: %v", err)
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		var naming atomic.Bool // the command in flight names key
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			defer server.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					naming.Store(bytes.Contains(buf[:n], []byte(p.key)))
					if _, err := server.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer p.wg.Done()
			defer client.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					if naming.Load() && p.drops.Load() > 0 && p.exists() {
						p.drops.Add(-1)
						p.dropped.Add(1)
						server.Close()
						return
					}
					if _, err := client.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// exists reports whether key exists on the server.
func (p *lossyProxy) exists() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := p.admin.Exists(ctx, p.key).Result()
	if err != nil {
		p.t.Errorf("proxy: %v", err)
	}
	return n == 1
}

func (p *lossyProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// The reply to the request that took the lock is lost, and go-redis
// retries the request: Lock recognises its own token and returns with
// the lock, instead of waiting for its own lock until it expires.
func TestLockReplyLost(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	probe := testStore(t, testClient(t))
	_, lockKey, _ := probe.keys()
	p, rdb := newLossyProxy(t, lockKey, 1, 3)
	s := &Store{Client: rdb, Key: probe.Key}
	// The lock lives far longer than this Lock may wait: without
	// recognising its token, Lock would return with its deadline.
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	unlock, err := s.Lock(lctx)
	if err != nil {
		t.Fatalf("Lock after a lost reply: %v (lost replies: %d)", err, p.dropped.Load())
	}
	if n := p.dropped.Load(); n != 1 {
		t.Fatalf("%d replies lost; want 1: the fault was not injected", n)
	}
	h := s.locks.get(s.Key)
	if v := p.admin.Get(ctx, lockKey).Val(); h == nil || v != h.token {
		t.Errorf("the lock holds %q; want this Lock's token", v)
	}
	if ttl := p.admin.PTTL(ctx, lockKey).Val(); ttl <= time.Minute {
		t.Errorf("lock TTL %v; want LockTTL's", ttl)
	}
	unlock()
	if n := p.admin.Exists(ctx, lockKey).Val(); n != 0 {
		t.Errorf("the lock key exists after unlock")
	}
}

// Every reply to Lock's request is lost, the retries' too: Lock fails,
// and releases the lock its request took, rather than leave the grant
// locked until the lock expires.
func TestLockFailedReleases(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	probe := testStore(t, testClient(t))
	_, lockKey, _ := probe.keys()
	p, rdb := newLossyProxy(t, lockKey, 2, 1) // the request and its one retry
	s := &Store{Client: rdb, Key: probe.Key}
	unlock, err := s.Lock(ctx)
	if err == nil {
		unlock()
		t.Fatal("Lock succeeded although every reply was lost")
	}
	if n := p.dropped.Load(); n != 2 {
		t.Fatalf("%d replies lost; want 2", n)
	}
	if errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "redisstore: ") {
		t.Errorf("err = %v; want a redisstore error, at once", err)
	}
	if n := p.admin.Exists(ctx, lockKey).Val(); n != 0 {
		t.Errorf("the lock is held after the failed Lock (TTL %v): the grant is blocked until it expires", p.admin.PTTL(ctx, lockKey).Val())
	}
	// The next Lock gets it at once.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u, err := (&Store{Client: testClient(t), Key: probe.Key}).Lock(lctx)
	if err != nil {
		t.Fatalf("Lock after the failed one: %v", err)
	}
	u()
}
