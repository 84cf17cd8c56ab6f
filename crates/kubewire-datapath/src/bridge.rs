//! Linux bridges: create one, attach ports (what a lab's shared "LAN" segment needs).

use rtnetlink::{LinkBridge, LinkUnspec};

use crate::{Error, Netlink, Result};

impl Netlink {
    /// Creates a bridge called `name`, administratively up.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        let req = self.handle.link().add(LinkBridge::new(name).up().build());
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("add bridge {name}"), e))
    }

    /// Attaches link `index` to the bridge (or other controller) `master`.
    pub fn set_link_master(&self, index: u32, master: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        let req = self.handle.link().set(msg);
        self.rt
            .block_on(req.execute())
            .map_err(|e| Error::netlink(format!("attach link #{index} to #{master}"), e))
    }
}
