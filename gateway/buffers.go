package gateway

import "sync"

// relayBuffers are the relays' copy buffers: 64 KiB, twice what
// httputil.ReverseProxy allocates for every request without a pool, and
// reused, so a pack or a long answer costs no garbage per request.
var relayBuffers = &bufferPool{pool: sync.Pool{New: func() any { return new([64 << 10]byte) }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return p.pool.Get().(*[64 << 10]byte)[:] }

func (p *bufferPool) Put(b []byte) {
	if cap(b) == 64<<10 {
		p.pool.Put((*[64 << 10]byte)(b[:64<<10]))
	}
}
