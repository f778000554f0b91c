package fakepandadoc_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

func TestChanges(t *testing.T) {
	errClosed := errors.New("closed")
	var (
		mu sync.Mutex
		c  fakepandadoc.Changes // the zero value
		n  int
	)
	closing, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- c.Wait(context.Background(), closing, &mu, func() bool { return n >= 3 }, errClosed)
	}()
	for range 3 {
		mu.Lock()
		n++
		c.NotifyLocked()
		mu.Unlock()
	}
	if err := <-done; err != nil {
		t.Errorf("Wait after the condition held: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Wait(ctx, closing, &mu, func() bool { return false }, errClosed); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with its context ended: %v, want context.Canceled", err)
	}
	stop()
	if err := c.Wait(context.Background(), closing, &mu, func() bool { return false }, errClosed); err != errClosed {
		t.Errorf("Wait after closing: %v, want the closed error", err)
	}
}
