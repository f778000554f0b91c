package fakepandadoc

import (
	"context"
	"sync"
)

// Changes lets goroutines wait for a condition on state that a mutex
// guards, without polling: whoever changes the state calls NotifyLocked,
// and Wait looks at the condition again. Its zero value is ready to use.
type Changes struct {
	ch chan struct{} // closed and replaced on each change; guarded by the state's mutex
}

// NotifyLocked wakes the waiters up after a change. The state's mutex
// must be held.
func (c *Changes) NotifyLocked() {
	if c.ch != nil {
		close(c.ch)
	}
	c.ch = make(chan struct{})
}

// Wait blocks until cond, called with mu held, reports true; it returns
// ctx.Err() if ctx ends first, and closedErr if closing ends first.
func (c *Changes) Wait(ctx, closing context.Context, mu sync.Locker, cond func() bool, closedErr error) error {
	for {
		mu.Lock()
		ok := cond()
		if c.ch == nil {
			c.ch = make(chan struct{})
		}
		changed := c.ch
		mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-closing.Done():
			return closedErr
		}
	}
}
