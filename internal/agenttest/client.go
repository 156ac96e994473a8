package agenttest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// Client speaks the wire protocol directly over any connection: one JSON
// request a line out, responses matched by id, notifications queued.
type Client struct {
	conn    net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	nextID  int
	resps   map[int]chan rpcResp
	revoked atomic.Int64
	notes   chan Note
	closed  chan struct{}
}

// Note is a notification.
type Note struct {
	Method string
	Params json.RawMessage
}

type rpcErr struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

type rpcResp struct {
	ID     *int            `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpcErr         `json:"error"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// NewClient starts reading conn.
func NewClient(conn net.Conn) *Client {
	// Up to 64 notes wait to be read; later ones are dropped.
	c := &Client{conn: conn, resps: map[int]chan rpcResp{}, notes: make(chan Note, 64), closed: make(chan struct{})}
	go c.read()
	return c
}

func (c *Client) read() {
	defer close(c.closed)
	sc := bufio.NewScanner(c.conn)
	// Start small: a thousand clients must not hold a MiB each.
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		var r rpcResp
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		if r.Method != "" {
			if r.Method == ipc.NotifyLeaseRevoked {
				c.revoked.Add(1)
			}
			select {
			case c.notes <- Note{r.Method, r.Params}:
			default:
			}
			continue
		}
		if r.ID == nil {
			continue
		}
		c.mu.Lock()
		ch := c.resps[*r.ID]
		delete(c.resps, *r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// Call sends one request and decodes the result into out (when not nil). On
// failure it returns the error's data.code, or UNAVAILABLE when the
// connection is gone.
func (c *Client) Call(method string, params any, out any) (code string, err error) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan rpcResp, 1)
	c.resps[id] = ch
	c.mu.Unlock()
	req := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	b, _ := json.Marshal(req)
	c.wmu.Lock()
	_, err = c.conn.Write(append(b, '\n'))
	c.wmu.Unlock()
	if err != nil {
		return ipc.CodeUnavailable, err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			var d struct {
				Code string `json:"code"`
			}
			_ = json.Unmarshal(r.Error.Data, &d)
			return d.Code, fmt.Errorf("%s: %s", d.Code, r.Error.Message)
		}
		if out != nil {
			return "", json.Unmarshal(r.Result, out)
		}
		return "", nil
	case <-c.closed:
		return ipc.CodeUnavailable, io.EOF
	}
}

// Acquire calls lease.acquire; on failure it returns the error's data.code.
func (c *Client) Acquire(p ipc.AcquireParams) (*ipc.AcquireResult, string, error) {
	var r ipc.AcquireResult
	code, err := c.Call(ipc.MethodAcquire, p, &r)
	if err != nil {
		return nil, code, err
	}
	return &r, "", nil
}

// Release calls lease.release.
func (c *Client) Release(id string) error {
	_, err := c.Call(ipc.MethodRelease, ipc.ReleaseParams{LeaseID: id}, nil)
	return err
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Done is closed when the connection's reader ends.
func (c *Client) Done() <-chan struct{} { return c.closed }

// Revoked counts lease.revoked notifications received.
func (c *Client) Revoked() int { return int(c.revoked.Load()) }

// Notes returns the notification channel (lossy when not drained).
func (c *Client) Notes() <-chan Note { return c.notes }

// NextNote waits up to within for a notification with this method,
// discarding others.
func (c *Client) NextNote(method string, within time.Duration) (Note, bool) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case n := <-c.notes:
			if n.Method == method {
				return n, true
			}
		case <-t.C:
			return Note{}, false
		}
	}
}
