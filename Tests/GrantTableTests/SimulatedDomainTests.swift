import SimulatedHypervisor
import Testing
import XenCore

@Suite struct SimulatedDomainTests {
    @Test func domainsGetLowestFreeIDsAndDeterministicUUIDs() throws {
        let hypervisor = SimulatedHypervisor()
        #expect(hypervisor.domains.map(\.id) == [.dom0])
        #expect(hypervisor.dom0.uuid == .zero)
        let one = try hypervisor.createDomain(name: "one")
        let two = try hypervisor.createDomain(name: "two")
        #expect(one.id == 1)
        #expect(two.id == 2)
        #expect(one.uuid.description == "53580000-0000-4000-8000-000000000001")
        #expect(two.uuid.description == "53580000-0000-4000-8000-000000000002")
        #expect(hypervisor.domains.map(\.id) == [0, 1, 2])
        #expect(hypervisor.domain(1)?.name == "one")
        #expect(hypervisor.domain(1)?.uuid == one.uuid)

        #expect(hypervisor.destroyDomain(1))
        #expect(!hypervisor.destroyDomain(1))
        #expect(!hypervisor.destroyDomain(.dom0))
        #expect(hypervisor.domain(1) == nil)
        #expect(!one.isAlive)
        let three = try hypervisor.createDomain()
        #expect(three.id == 1)
        #expect(three.uuid != one.uuid)
        #expect(three.isAlive)
        #expect(!one.isAlive)

        // The same sequence gives the same identities in another hypervisor.
        let again = SimulatedHypervisor()
        #expect(try again.createDomain().uuid == one.uuid)
    }

    @Test func explicitIDsAndUUIDs() throws {
        let hypervisor = SimulatedHypervisor()
        let uuid = try #require(DomainUUID("6C9A4E2B-0D3F-4A51-9E7B-1234567890AB"))
        let domain = try hypervisor.createDomain(id: 7, name: "seven", uuid: uuid)
        #expect(domain.id == 7)
        #expect(hypervisor.domain(7)?.uuid.description == "6c9a4e2b-0d3f-4a51-9e7b-1234567890ab")
        #expect(throws: SimulatedHypervisorError.domainExists(7)) { _ = try hypervisor.createDomain(id: 7) }
        #expect(throws: SimulatedHypervisorError.invalidDomainID(0)) { _ = try hypervisor.createDomain(id: 0) }
        #expect(throws: SimulatedHypervisorError.invalidDomainID(.`self`)) {
            _ = try hypervisor.createDomain(id: .`self`)
        }
    }

    @Test func releasesAreDeliveredToEverySubscriber() async throws {
        let hypervisor = SimulatedHypervisor()
        let a = try hypervisor.createDomain()
        let b = try hypervisor.createDomain()
        let first = hypervisor.domainReleases()
        let second = hypervisor.domainReleases()
        hypervisor.destroyDomain(b.id)
        hypervisor.destroyDomain(a.id)
        var one = first.makeAsyncIterator()
        var two = second.makeAsyncIterator()
        #expect(await one.next()?.id == b.id)
        #expect(await one.next()?.id == a.id)
        #expect(await two.next()?.id == b.id)
        #expect(await two.next()?.id == a.id)
    }

    @Test func uuidTextRoundTripAndRejects() {
        let text = "00112233-4455-6677-8899-aabbccddeeff"
        let uuid = DomainUUID(text)
        #expect(uuid?.description == text)
        #expect(
            uuid?.bytes == [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
            ])
        #expect(DomainUUID("00112233-4455-6677-8899-aabbccddeef") == nil)
        #expect(DomainUUID("00112233x4455-6677-8899-aabbccddeeff") == nil)
        #expect(DomainUUID("0011223g-4455-6677-8899-aabbccddeeff") == nil)
        #expect(DomainUUID("00112233-4455-6677-8899-aabbccddeeffa") == nil)
        #expect(DomainUUID(bytes: [1, 2, 3]) == nil)
        #expect(DomainUUID.zero.description == "00000000-0000-0000-0000-000000000000")
    }
}
